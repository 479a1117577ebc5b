"""The model replica: loads the model once, runs `@serve.batch` batches, answers health checks.

One request carries one or more inputs; `batch_size_fn` makes Ray Serve count inputs, not
requests, so `max_batch_size` bounds what the model sees in one forward pass. The forward pass
runs in a worker thread so the replica's event loop keeps accepting requests (they form the
next batch) while the model computes.

A causal LM's replica also runs a `GenerationService` (continuous batching in its own decode
thread) and streams `/v1/generate` requests from `generate`, one message per ready batch of
events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import psutil
from ray import serve

from wattwise.errors import WattwiseError
from wattwise.serve.energy_windows import SerialEnergyWindows
from wattwise.serve.loopback import bind_replica_grpc_to_loopback
from wattwise.serve.signature import ModelSignature, array_inputs, encode_outputs

if TYPE_CHECKING:
    from wattwise.serve.generation_http import Event

DEFAULT_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_S = 0.005


def count_inputs(payloads: list[list[Any]]) -> int:
    """Inputs in a batch of requests (Ray Serve's `batch_size_fn`)."""
    return sum(len(payload) for payload in payloads)


def _replica_id() -> str:
    """Ray Serve's id of this replica ("local" outside Ray)."""
    try:
        return serve.get_replica_context().replica_tag
    except Exception:  # noqa: BLE001 - not inside a Serve replica (tests, tools)
        return "local"


# Runs in the replica process when Ray imports this module to build the deployment.
bind_replica_grpc_to_loopback()


@serve.deployment
class ModelReplica:
    """Serves one model; every method is idempotent, so a failed call can be retried elsewhere."""

    def __init__(self, settings: dict[str, Any], signature: dict[str, Any]) -> None:
        import torch

        from wattwise.compress.variant import open_model
        from wattwise.measure.energy import detect_energy_source
        from wattwise.serve.settings import ServeSettings

        config = ServeSettings(**settings)
        torch.set_num_threads(config.threads())
        # Only what serving needs: a variant's weights and tokenizer, never its source model.
        loaded = open_model(config.model, config.model_options(), serving_only=True)
        self.module = loaded.module.eval()
        self.task = loaded.task
        self.signature = ModelSignature.from_dict(signature)
        self.energy = detect_energy_source()
        self.windows = SerialEnergyWindows(self.energy)
        self.health_timeout_s = config.health_check_timeout_s
        self.replica_id = _replica_id()
        self.process = psutil.Process()
        self.waiting = 0  # calls in this replica (queued for a batch or computing)
        self.batched_predict.set_max_batch_size(config.max_batch_size)
        self.batched_predict.set_batch_wait_timeout_s(config.replica_batch_wait_s())
        self.health_period_s = config.health_check_period_s
        self.generation = None
        if self.signature.generates:  # a causal LM: /v1/generate by continuous batching
            # Imported only here: the engine pulls in transformers' cache code (1.3 s of a
            # replica's start), which a replica of any other model never needs.
            from wattwise.serve.generation_http import generation_service

            self.generation = generation_service(
                loaded, config.max_batch_size, config.kv_cache_budget_bytes, config.draft
            )
        # Warm up (first calls allocate) so the first user request does not pay for it.
        self._run([self.signature.example])

    def _inputs(self, samples: list[Any]) -> tuple:
        if self.signature.input_kind == "text":
            return tuple(self.task.tokenize(samples))
        return array_inputs(self.signature, samples)

    def _run(self, samples: list[Any]) -> tuple[list[dict[str, Any]], float]:
        """Predictions for `samples` and the energy (J) the forward pass used."""
        import torch

        def forward() -> list[dict[str, Any]]:
            with torch.inference_mode():
                outputs = self.module(*self._inputs(samples))
            return encode_outputs(self.signature, outputs)

        predictions, reading = self.windows.run(forward)
        return predictions, reading.energy_j

    async def predict(self, samples: list[Any]) -> dict[str, Any]:
        """One request's inputs → its predictions (batched with other requests' inputs)."""
        self.waiting += 1
        try:
            return await self.batched_predict(samples)
        finally:
            self.waiting -= 1

    @serve.batch(
        max_batch_size=DEFAULT_BATCH_SIZE,
        batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S,
        batch_size_fn=count_inputs,
    )
    async def batched_predict(self, payloads: list[list[Any]]) -> list[dict[str, Any]]:
        """A batch of requests (each a list of inputs) → one result dict per request."""
        flat = [sample for payload in payloads for sample in payload]
        # Calls waiting here when the batch starts, this batch's included: the replica's queue.
        queue_length = self.waiting
        predictions, energy_j = await asyncio.to_thread(self._run, flat)
        replica = {
            "id": self.replica_id,
            "rss_bytes": self.process.memory_info().rss,
            "queue_length": queue_length,
        }
        results, start = [], 0
        for index, payload in enumerate(payloads):
            count = len(payload)
            results.append(
                {
                    "predictions": predictions[start : start + count],
                    "energy_j": energy_j * count / len(flat),
                    "energy_source": self.energy.name,
                    "energy_uncertainty_pct": self.energy.uncertainty_pct,
                    # Only the batch's first request reports the batch, so it counts once.
                    "batch_inputs": len(flat) if index == 0 else 0,
                    "batch_requests": len(payloads) if index == 0 else 0,
                    "replica": replica if index == 0 else None,
                }
            )
            start += count
        return results

    async def generate(
        self,
        prompt: str,
        max_new_tokens: int,
        stop_at_eos: bool = True,
        truncate_prompt: bool = False,
    ) -> AsyncIterator[list[Event]]:
        """One `/v1/generate` request, streamed (`handle.options(stream=True)`): lists of
        (event, data), the first either tokens or one ("rejected", {"status", "detail"}) when
        the request cannot start here (503: the KV cache is full; 422: a bad request). Closing
        the stream (the client went away) cancels the request at the next decode step."""
        from wattwise.serve.generation_engine import KVCacheFullError
        from wattwise.serve.generation_http import event_batches

        if self.generation is None:
            detail = f"{self.signature.model} is not a causal LM; use /v1/predict"
            yield [("rejected", {"status": 422, "detail": detail})]
            return
        try:
            stream = self.generation.submit(prompt, max_new_tokens, stop_at_eos, truncate_prompt)
        except KVCacheFullError as error:
            yield [("rejected", {"status": 503, "detail": str(error)})]
            return
        except WattwiseError as error:  # empty after tokenization, or past the context
            yield [("rejected", {"status": 422, "detail": str(error)})]
            return
        async for batch in event_batches(self.generation, stream):
            yield batch

    async def check_health(self) -> None:
        """A real tiny inference: a replica that cannot predict is unhealthy, not just alive.

        A batch that succeeded within the last period already proves that; the check then adds
        no inference (which would wait for, and lengthen, the batches under load).
        """
        if self.generation is not None and not self.generation.alive:
            raise RuntimeError("the decode loop stopped")
        if self.windows.succeeded_within(self.health_period_s):
            return
        await asyncio.wait_for(
            asyncio.to_thread(self._run, [self.signature.example]), self.health_timeout_s
        )
