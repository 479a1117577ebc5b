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
