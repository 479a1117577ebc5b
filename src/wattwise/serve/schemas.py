"""Request and response models of the HTTP API, built from the served model's signature.

Because the input model is exact (nested lists of fixed lengths and value ranges, or strings of
bounded length), FastAPI rejects bad input with 422 before it reaches a replica, and the
OpenAPI schema tells clients (and schemathesis) precisely what is accepted.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from wattwise.serve.signature import ModelSignature


class ClassPrediction(BaseModel):
    """A classifier's answer for one input."""

    label: int = Field(description="index of the most probable class")
    probabilities: list[float] = Field(description="softmax over the classes")
    label_name: str | None = Field(
        None, description="the class's name, when the model names its classes (id2label)"
    )


class EmbeddingPrediction(BaseModel):
    """A text encoder's answer for one input."""

    embedding: list[float] = Field(description="sentence embedding (L2-normalized for minilm)")


class ValuesPrediction(BaseModel):
    """Raw model outputs for one input."""

    output: Any = Field(description="the model's output for this input, nested lists")


PREDICTION_TYPES = {
    "classes": ClassPrediction,
    "embedding": EmbeddingPrediction,
    "values": ValuesPrediction,
}


class ErrorBody(BaseModel):
    """Every error response: what went wrong and how to fix it."""

    detail: Any


class Health(BaseModel):
    """`/healthz`: the process is up."""

    status: str


class Readiness(BaseModel):
    """`/readyz`: every replica loaded and answering health checks."""

    ready: bool
    model: str
    replicas_healthy: int
    replicas_target: int


def _sample_type(signature: ModelSignature, max_text_chars: int) -> Any:
    """The JSON type of one input: a bounded string, or nested fixed-length number lists."""
    if signature.input_kind == "text":
        return Annotated[str, Field(min_length=1, max_length=max_text_chars)]
    number = int if signature.input_dtype == "int64" else float
    constraints: dict[str, Any] = {} if number is int else {"allow_inf_nan": False}
    if signature.value_min is not None:
        constraints["ge"] = signature.value_min
    if signature.value_max is not None:
        constraints["le"] = signature.value_max
    sample: Any = Annotated[number, Field(**constraints)]
    for size in reversed(signature.request_shape):
        sample = Annotated[list[sample], Field(min_length=size, max_length=size)]
    return sample


def describe_input(signature: ModelSignature) -> str:
    """One sentence for the OpenAPI description of `inputs`."""
    if signature.input_kind == "text":
        return "one text or a list of texts"
    shape = "×".join(str(size) for size in signature.request_shape)
    values = ""
    if signature.value_min is not None and signature.value_max is not None:
        values = f" of values {signature.value_min:g}–{signature.value_max:g}"
    return f"one {shape} array{values} (nested lists), or a list of them"


def request_model(signature: ModelSignature, max_inputs: int, max_text_chars: int) -> type:
    """`PredictRequest`: `{"inputs": one input or a list of 1..max_inputs inputs}`."""
    sample = _sample_type(signature, max_text_chars)
    many = Annotated[list[sample], Field(min_length=1, max_length=max_inputs)]
    example = {"inputs": [signature.example]}
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [example]}),
        inputs=(sample | many, Field(description=describe_input(signature))),
    )


def response_model(signature: ModelSignature) -> type:
    """`PredictResponse`: the model served and one prediction per input, in order."""
    prediction = PREDICTION_TYPES[signature.output_kind]
    return create_model(
        "PredictResponse",
        model=(str, Field(description="the model or variant that answered")),
        predictions=(list[prediction], Field(description="one per input, in input order")),
    )


class TokenEvent(BaseModel):
    """`event: token` of `/v1/generate`: one generated token."""

    token_id: int = Field(description="the token's id in the model's vocabulary")
    text: str = Field(description="the token decoded on its own (special tokens: empty)")
    index: int = Field(description="0 for the first generated token, then 1, 2, ...")


class DoneEvent(BaseModel):
    """`event: done`: the stream ended normally (the last event)."""

    finish_reason: str = Field(description='"length" (max_new_tokens reached) or "eos"')
    tokens: int = Field(description="tokens streamed")
    prompt_tokens: int = Field(description="prompt tokens the model read")
    prompt_tokens_dropped: int = Field(
        description="prompt tokens cut from the front to fit the context (truncate_prompt)"
    )


class StreamErrorEvent(BaseModel):
    """`event: error`: the stream was cut (the replica died mid-stream); no `done` follows."""

    detail: str = Field(description="what cut the stream")
    tokens: int = Field(description="tokens streamed before the cut")


GENERATE_EVENTS = (
    "Server-sent events (text/event-stream): `token` events (TokenEvent), then exactly one "
    "final event, `done` (DoneEvent) or `error` (StreamErrorEvent) when the stream was cut "
    "after it began. Nothing is streamed before the first token: a request that cannot start "
    "gets 503 (KV cache full, Retry-After) or 422 instead."
)


def generate_request_model(signature: ModelSignature, max_text_chars: int) -> type:
    """`GenerateRequest`: `{"prompt": text, "max_new_tokens": n}` (greedy decoding)."""
    context = signature.context_tokens or 1 << 30
    example = {"prompt": signature.example_prompt, "max_new_tokens": 32}
    return create_model(
        "GenerateRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [example]}),
        prompt=(
            Annotated[str, Field(min_length=1, max_length=max_text_chars)],
            Field(description="text to continue"),
        ),
        max_new_tokens=(
            Annotated[int, Field(ge=1, le=max(1, context - 1))],
            Field(64, description="tokens to generate at most (prompt + these ≤ the context)"),
        ),
        stop_at_eos=(
            bool,
            Field(True, description="end at the end-of-text token; false: exactly max_new_tokens"),
        ),
        truncate_prompt=(
            bool,
            Field(
                False,
                description="keep only the prompt's last tokens when prompt + max_new_tokens "
                "would pass the context (false: such a request is refused with 422)",
            ),
        ),
    )


def generate_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of `/v1/generate` (the event models appear in its 200 content)."""
    events = [TokenEvent, DoneEvent, StreamErrorEvent]
    return {
        200: {
            "description": GENERATE_EVENTS,
            "content": {
                "text/event-stream": {
                    "schema": {"anyOf": [event.model_json_schema() for event in events]}
                }
            },
        },
        422: {"model": ErrorBody, "description": "invalid request or past the model's context"},
        503: {"model": ErrorBody, "description": "KV cache full or no replica; see Retry-After"},
    }
