"""What a served model takes and returns, as plain data, and the conversions to and from JSON.

`describe_model(loaded)` runs once in the `wattwise serve` process (which also proves the model
loads before any replica starts); the resulting `ModelSignature` travels to the replicas as a
dict. Requests are JSON only: numbers and strings become tensors here, nothing is unpickled.

Decisions a client sees:
- array models take their per-sample shape with leading size-1 axes dropped (a (1, 8, 8)
  input is sent as 8×8), in the units, range and scale their task's `request_format()` gives
  (digits-cnn: intensities 0–16, the scale of scikit-learn's `load_digits().images`, divided
  by 16 as in training); other tasks take the model's own values, and models on token ids
  integers within their input Embedding's rows.
- text encoders take strings; outputs are their (normalized) embeddings.
- classifiers (task metric "accuracy") return the arg-max label and softmax probabilities.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from wattwise.errors import ConfigError
from wattwise.models.generation import is_causal_lm
from wattwise.models.inputs import input_embedding
from wattwise.models.registry import LoadedModel

EXAMPLE_PROMPT_TOKENS = 8


@dataclass(frozen=True)
class ModelSignature:
    """A served model's interface.

    Attributes:
        model: the spec served (shown in responses, so a swap is visible).
        input_kind: "text" or "array".
        sample_shape: per-sample tensor shape the module takes (array models).
        request_shape: per-sample shape a client sends (sample_shape without leading 1s).
        input_dtype: "float32" or "int64" (array models).
        value_min, value_max: accepted value range (None: any finite number).
        input_scale: the server multiplies array inputs by this before the model.
        output_kind: "classes", "embedding" or "values".
        example: one valid input, as JSON data.
        generates: a causal LM: replicas also serve `POST /v1/generate`.
        context_tokens: most tokens (prompt + new) a generation may span (causal LMs).
        example_prompt: a prompt for `/v1/generate` (causal LMs).
        class_names: the classes' names in index order (a Hugging Face classifier's id2label).
    """

    model: str
    input_kind: str
    sample_shape: tuple[int, ...] = ()
    request_shape: tuple[int, ...] = ()
    input_dtype: str = "float32"
    value_min: float | None = None
    value_max: float | None = None
    input_scale: float = 1.0
    output_kind: str = "values"
    example: Any = None
    generates: bool = False
    context_tokens: int | None = None
    example_prompt: str | None = None
    class_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples become lists) for replica init arguments and `/v1/model`."""
        return dataclasses.asdict(self)

    def description(self) -> dict[str, Any]:
        """What `GET /v1/model` (and gRPC `Model`) returns: this and an example request."""
        return {**self.to_dict(), "example_request": {"inputs": [self.example]}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSignature:
        """The inverse of `to_dict`."""
        fields = dict(data)
        fields["sample_shape"] = tuple(fields["sample_shape"])
        fields["request_shape"] = tuple(fields["request_shape"])
        fields["class_names"] = tuple(fields.get("class_names", ()))
        return cls(**fields)


def describe_model(loaded: LoadedModel) -> ModelSignature:
    """The signature of a loaded model; ConfigError for models serving cannot take yet."""
    task = loaded.task
    request = task.request_format()
    if hasattr(task, "tokenize") and "tokenizer" in loaded.extra:
        names = tuple(getattr(task, "class_names", ()))
        kind = "classes" if task.output_kind == "logits" else "embedding"
        if kind == "classes" and len(names) == 1:
            # One output (a regression or scoring head, e.g. a cross-encoder): a softmax over
            # one class would answer label 0 with probability 1 whatever the text.
            kind, names = "values", ()
        return ModelSignature(
            loaded.name, "text", output_kind=kind, example=request.example, class_names=names
        )
    example_inputs = task.example_inputs(1)
    if len(example_inputs) != 1:
        raise ConfigError(
            f"{loaded.name} takes {len(example_inputs)} input tensors; serving supports text "
            "encoders and single-input models: wrap yours in a factory taking one tensor"
        )
    sample = example_inputs[0][0]
    sample_shape = tuple(sample.shape)
    request_shape = sample_shape
    while len(request_shape) > 1 and request_shape[0] == 1:
        request_shape = request_shape[1:]
    if not request_shape:
        raise ConfigError(f"{loaded.name} takes scalar samples; give it at least a 1-D input")
    dtype = "int64" if sample.dtype in (torch.int64, torch.int32) else "float32"
    classifier = getattr(task, "metric_name", None) == "accuracy"
    value_min, value_max = request.value_min, request.value_max
    if dtype == "int64" and value_min is None and value_max is None:
        value_min, value_max = _token_id_range(loaded)
    signature = ModelSignature(
        loaded.name,
        "array",
        sample_shape,
        request_shape,
        dtype,
        value_min,
        value_max,
        request.input_scale,
        "classes" if classifier else "values",
        torch.as_tensor(request.example).reshape(request_shape).tolist(),
    )
    return _with_generation(loaded, signature)


def _with_generation(loaded: LoadedModel, signature: ModelSignature) -> ModelSignature:
    """A causal LM's signature also describes `/v1/generate`: its context and a prompt (the
    first tokens of the array example, decoded: held-out text the model has never seen)."""
    tokenizer = loaded.extra.get("tokenizer")
    if not is_causal_lm(loaded) or tokenizer is None:
        return signature
    from wattwise.models.causal_lm import context_tokens  # (causal LMs only: kept off start-up)

    context = context_tokens(loaded.module.lm)
    prompt_ids = torch.as_tensor(signature.example).reshape(-1)[:EXAMPLE_PROMPT_TOKENS]
    prompt = tokenizer.decode(prompt_ids.tolist(), skip_special_tokens=True).strip() or "The"
    return dataclasses.replace(
        signature, generates=True, context_tokens=context, example_prompt=prompt
    )


def _token_id_range(loaded: LoadedModel) -> tuple[float | None, float | None]:
    """Ids 0..rows-1 of the model's input Embedding, so a bad id is a 422, not a replica crash.

    The task's reference is the original PyTorch model even when the variant runs elsewhere."""
    reference = getattr(loaded.task, "reference", None)
    found = input_embedding(reference if isinstance(reference, nn.Module) else loaded.module)
    return (0, found[1].num_embeddings - 1) if found else (None, None)


def array_inputs(signature: ModelSignature, samples: list[Any]) -> tuple[torch.Tensor, ...]:
    """Validated JSON samples → the module's one input tensor (scaled, in its dtype)."""
    dtype = torch.int64 if signature.input_dtype == "int64" else torch.float32
    batch = torch.tensor(samples, dtype=dtype).reshape(len(samples), *signature.sample_shape)
    if signature.input_scale != 1.0:
        batch = batch * signature.input_scale
    return (batch,)


def encode_outputs(signature: ModelSignature, outputs: torch.Tensor) -> list[dict[str, Any]]:
    """Model outputs (N, ...) → one prediction per sample, its numbers as a float64 numpy row.

    Arrays, not lists of Python floats: Ray pickles an array as one buffer and the ingress's
    orjson writes it directly (one Python float object per value cost both hops); float64
    keeps the JSON text exactly what `json.dumps` of the floats wrote before.
    """
    outputs = outputs.detach().float()
    if signature.output_kind == "classes":
        probabilities = torch.softmax(outputs.reshape(len(outputs), -1), dim=-1)
        labels = probabilities.argmax(dim=-1).tolist()
        rows = probabilities.double().contiguous().numpy()
        names = signature.class_names
        return [
            {"label": label, "probabilities": row}
            | ({"label_name": names[label]} if label < len(names) else {})
            for label, row in zip(labels, rows, strict=True)
        ]
    rows = outputs.double().contiguous().numpy()
    if signature.output_kind == "embedding":
        return [{"embedding": row} for row in rows]
    return [{"output": row} for row in rows]
