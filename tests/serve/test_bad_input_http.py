"""The HTTP API's bad-input table: every row is one bad request and the status it must get.

The app under test is the real FastAPI app (`build_app`: validation, API key, body guard)
served in-process over ASGI, with a real digits-cnn behind a one-replica stand-in for the Ray
ingress (tests/serve/test_server.py covers the Ray path). Each row asserts the status, a JSON
body with one `detail` and no traceback, and that the app still answers a good request after.

Add a row: (id, method, path, headers, body or body factory, expected status).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tracemalloc

import httpx
import pytest

from wattwise.models.registry import load_model
from wattwise.serve.http_app import build_app
from wattwise.serve.metrics import ServeMetrics
from wattwise.serve.schemas import request_model
from wattwise.serve.settings import ServeSettings
from wattwise.serve.signature import array_inputs, describe_model, encode_outputs

KEY_ENV = "WATTWISE_HTTP_TABLE_KEY"
KEY = "http-table-key-3c9a"
AUTH = {"X-API-Key": KEY}
LIMIT_BYTES = 1_000_000


class LocalIngress:
    """What `build_app` needs from the Ray ingress, answering with one in-process model."""

    def __init__(self, host: str) -> None:
        os.environ[KEY_ENV] = KEY
        loaded = load_model("digits-cnn")
        self.module = loaded.module.eval()
        self.signature = describe_model(loaded)
        self.settings = ServeSettings(
            model="digits-cnn", host=host, api_key_env=KEY_ENV, max_body_bytes=LIMIT_BYTES
        )
        self.api_key_digest = self.settings.api_key_digest()
        self.metrics = ServeMetrics()
        self.request_type = request_model(
            self.signature, self.settings.max_batch_size, self.settings.max_text_chars
        )

    async def predict(self, inputs):
        import torch

        single = isinstance(inputs, list) and _depth(inputs) == len(self.signature.request_shape)
        samples = [inputs] if single else inputs
        with torch.inference_mode():
            outputs = self.module(*array_inputs(self.signature, samples))
        return {
            "model": self.signature.model,
            "predictions": encode_outputs(self.signature, outputs),
        }

    async def replica_counts(self):
        return 1, 1


def _depth(value) -> int:
    depth = 0
    while isinstance(value, list) and value:
        depth, value = depth + 1, value[0]
    return depth


@pytest.fixture(scope="module")
def apps():
    """The app as it runs off loopback (0.0.0.0, key required) and on loopback."""
    off, on = LocalIngress("0.0.0.0"), LocalIngress("127.0.0.1")
    return {"off": build_app(off), "on": build_app(on), "example": off.signature.example}


def _call(app, method, path, headers=None, content=None):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://wattwise") as client:
            return await client.request(method, path, headers=headers or {}, content=content)

    return asyncio.run(go())


def _body(inputs) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def _example_with(example, value):
    rows = [list(row) for row in example]
    rows[0][0] = value
    return rows


JSON = {"content-type": "application/json", **AUTH}
ROWS = [
    ("predict-no-key", "POST", "/v1/predict", {"content-type": "application/json"}, "good", 401),
    ("predict-wrong-key", "POST", "/v1/predict", {"X-API-Key": "nope"}, "good", 401),
    ("predict-wrong-bearer", "POST", "/v1/predict", {"Authorization": "Bearer nope"}, "good", 401),
    ("model-no-key", "GET", "/v1/model", {}, None, 401),
    ("metrics-no-key", "GET", "/metrics", {}, None, 401),
    ("openapi-no-key-off-loopback", "GET", "/openapi.json", {}, None, 401),
    ("docs-no-key-off-loopback", "GET", "/docs", {}, None, 401),
    ("openapi-wrong-key-off-loopback", "GET", "/openapi.json", {"X-API-Key": "nope"}, None, 401),
    ("body-not-json", "POST", "/v1/predict", JSON, b"{not json", 422),
    ("body-empty", "POST", "/v1/predict", JSON, b"", 422),
    ("body-not-object", "POST", "/v1/predict", JSON, b"[1, 2, 3]", 422),
    ("inputs-missing", "POST", "/v1/predict", JSON, b'{"input": []}', 422),
    ("extra-field", "POST", "/v1/predict", JSON, "extra", 422),
    ("wrong-shape", "POST", "/v1/predict", JSON, _body([[1.0] * 7]), 422),
    ("wrong-depth", "POST", "/v1/predict", JSON, _body([[[[1.0]]]]), 422),
    ("value-too-large", "POST", "/v1/predict", JSON, "too-large", 422),
    ("value-negative", "POST", "/v1/predict", JSON, "negative", 422),
    ("value-nan", "POST", "/v1/predict", JSON, "nan", 422),
    ("value-string", "POST", "/v1/predict", JSON, "string", 422),
    ("inputs-empty-list", "POST", "/v1/predict", JSON, _body([]), 422),
    ("inputs-too-many", "POST", "/v1/predict", JSON, "too-many", 422),
    ("inputs-null", "POST", "/v1/predict", JSON, b'{"inputs": null}', 422),
    ("body-2x-limit", "POST", "/v1/predict", JSON, b"x" * (2 * LIMIT_BYTES), 413),
    ("predict-get", "GET", "/v1/predict", AUTH, None, 405),
    ("predict-put", "PUT", "/v1/predict", JSON, "good", 405),
    ("unknown-path", "GET", "/v2/predict", AUTH, None, 404),
]


def _content(body, example):
    named = {
        "good": _body([example]),
        "extra": json.dumps({"inputs": [example], "debug": True}).encode(),
        "too-large": _body([_example_with(example, 99.0)]),
        "negative": _body([_example_with(example, -1.0)]),
        "nan": _body([_example_with(example, math.nan)]),  # json.dumps writes NaN
        "string": _body([_example_with(example, "seven")]),
        "too-many": _body([example] * 33),
    }
    return named.get(body, body) if isinstance(body, str) else body


def assert_clean_response(response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert "Traceback" not in response.text
    assert "detail" in response.json()


def assert_still_answers(app, example) -> None:
    good = _call(app, "POST", "/v1/predict", JSON, _body([example]))
    assert good.status_code == 200, good.text[:500]
    assert len(good.json()["predictions"]) == 1


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_bad_request_row(method, path, headers, body, status, apps):
    response = _call(apps["off"], method, path, headers, _content(body, apps["example"]))
    assert_clean_response(response, status)
    assert_still_answers(apps["off"], apps["example"])


def _streamed(total_bytes: int, chunk_bytes: int = 64 * 1024):
    async def chunks():
        sent = 0
        while sent < total_bytes:
            size = min(chunk_bytes, total_bytes - sent)
            sent += size
            yield b" " * size

    return chunks()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_body_50x_over_the_limit_gets_413_in_bounded_memory(apps, declared):
    total = 50 * LIMIT_BYTES
    headers = {**JSON, **({"content-length": str(total)} if declared else {})}
    tracemalloc.start()
    try:
        response = _call(apps["off"], "POST", "/v1/predict", headers, _streamed(total))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_clean_response(response, 413)
    assert peak < 5 * LIMIT_BYTES, f"peak {peak / 1e6:.1f} MB for a {total / 1e6:.0f} MB body"
    assert_still_answers(apps["off"], apps["example"])


def test_docs_and_schema_need_the_key_off_loopback_only(apps):
    assert _call(apps["off"], "GET", "/openapi.json", AUTH).json()["info"]["title"]
    assert _call(apps["off"], "GET", "/docs", AUTH).status_code == 200
    assert _call(apps["on"], "GET", "/openapi.json").status_code == 200
    for probe in ("/healthz", "/readyz"):
        assert _call(apps["off"], "GET", probe).status_code == 200
