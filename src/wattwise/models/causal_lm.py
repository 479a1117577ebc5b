"""Causal language models: Hugging Face directories on disk and the built-in `tiny-lm`.

A causal LM is wrapped in `CausalLM`, whose forward takes `input_ids` and returns logits, so
profiling, compression steps and tasks treat it like any other module; generation goes through
the wrapped model's own `generate` (KV cache, assisted generation). GPT-2's `Conv1D` layers are
rewritten as `nn.Linear` on load (the same maths, weight transposed) so that int8 and weight-only
quantization, which look for Linear layers, reach them.

`tiny-lm` is a GPT-2-config model with a byte-level BPE tokenizer, both trained here on first
use on the standard library's docstrings (`tasks/language.py`) and cached in `$WATTWISE_CACHE`
as an ordinary Hugging Face directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from wattwise.errors import ConfigError, ModelLoadError
from wattwise.paths import atomic_directory, cache_dir
from wattwise.progress import info
from wattwise.tasks.language import CausalLMTask, docstring_paragraphs

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
PRESET_ENV = "WATTWISE_TINY_LM_PRESET"


class CausalLM(nn.Module):
    """forward(input_ids) → logits (batch, tokens, vocabulary); `self.lm` generates."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


def conv1d_to_linear(model: nn.Module) -> int:
    """Replace every transformers `Conv1D` (GPT-2's y = xW + b, W of shape (in, out)) by the
    equivalent `nn.Linear`; returns how many were replaced."""
    from transformers.pytorch_utils import Conv1D

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                in_features, out_features = child.weight.shape
                linear = nn.Linear(in_features, out_features, bias=child.bias is not None)
                linear.weight = nn.Parameter(child.weight.detach().t().contiguous())
                if child.bias is not None:
                    linear.bias = nn.Parameter(child.bias.detach().clone())
                setattr(parent, name, linear)
                replaced += 1
    return replaced


def context_tokens(lm: nn.Module) -> int | None:
    """The longest sequence a Hugging Face causal LM reads (its position embeddings, from
    `n_positions` or `max_position_embeddings`), or None when its config names neither."""
    config = lm.config.get_text_config()
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def is_causal_lm_directory(directory: Path) -> bool:
    """Whether a Hugging Face directory's config names a causal-LM architecture."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return any(str(a).endswith(CAUSAL_SUFFIXES) for a in config.get("architectures") or [])


def load_causal_lm(directory: Path) -> tuple[CausalLM, object]:
    """A `CausalLM` and its tokenizer from a Hugging Face directory (offline, safetensors only)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    directory = Path(directory)
    if not list(directory.glob("*.safetensors")):
        raise ModelLoadError(
            f"{directory} has no .safetensors weights; wattwise never unpickles weights: "
            "save the model with save_pretrained(safe_serialization=True)"
        )
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, use_safetensors=True
        )
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(
            f"cannot load causal LM from {directory}: {str(error).splitlines()[0]}; the "
            "directory needs config.json, safetensors weights and tokenizer files"
        ) from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    conv1d_to_linear(lm)
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    return CausalLM(lm).eval(), tokenizer


@dataclass(frozen=True)
class TinyLMSettings:
    """Size and training budget of `tiny-lm` (the "test" preset trains in seconds)."""

    vocabulary: int = 4096
    width: int = 128
    layers: int = 6
    heads: int = 4
    block_tokens: int = 128
    train_steps: int = 500
    batch_size: int = 16
    learning_rate: float = 3e-3
    seed: int = 0

    def cache_name(self) -> str:
        """A cache directory name that changes whenever a setting does."""
        import hashlib

        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"tiny-lm-v1-{digest[:10]}"


PRESETS = {
    "default": TinyLMSettings(),
    "test": TinyLMSettings(
        vocabulary=512, width=32, layers=4, heads=2, block_tokens=32, train_steps=30
    ),
}


def tiny_lm_settings() -> TinyLMSettings:
    """The preset named by `WATTWISE_TINY_LM_PRESET` ("default" or "test")."""
    name = os.environ.get(PRESET_ENV, "default").strip() or "default"
    if name not in PRESETS:
        raise ConfigError(f"{PRESET_ENV}={name!r} is not a preset; use one of {', '.join(PRESETS)}")
    return PRESETS[name]


def train_tokenizer(settings: TinyLMSettings):
    """A byte-level BPE tokenizer trained on the train split's text (never on held-out text)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        docstring_paragraphs(settings.seed)["train"],
        vocab_size=settings.vocabulary,
        min_frequency=2,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def train_tiny_lm(directory: Path, settings: TinyLMSettings, show_progress: bool = True) -> None:
    """Train tokenizer and model from scratch and save both as a Hugging Face directory."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from wattwise.fit.loop import TrainConfig, fit

    tokenizer = train_tokenizer(settings)
    task = CausalLMTask(tokenizer, settings.block_tokens, settings.seed)
    torch.manual_seed(settings.seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=max(512, settings.block_tokens),
        n_embd=settings.width,
        n_layer=settings.layers,
        n_head=settings.heads,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    lm = GPT2LMHeadModel(config)
    fit(
        CausalLM(lm),
        task.training_batches(settings.batch_size, seed=settings.seed),
        task.supervised_loss,
        TrainConfig(
            steps=settings.train_steps,
            learning_rate=settings.learning_rate,
            weight_decay=0.01,
            warmup_steps=settings.train_steps // 20,
            seed=settings.seed,
        ),
        description="training tiny-lm (first use)",
        show_progress=show_progress,
    )
    with atomic_directory(directory) as temporary:
        lm.save_pretrained(temporary, safe_serialization=True)
        tokenizer.save_pretrained(temporary)
        (Path(temporary) / "wattwise_tiny_lm.json").write_text(json.dumps(asdict(settings)))


def tiny_lm_directory(settings: TinyLMSettings | None = None, show_progress: bool = True) -> Path:
    """The cached tiny-lm directory, trained on first use."""
    settings = settings or tiny_lm_settings()
    directory = cache_dir() / settings.cache_name()
    if not (directory / "wattwise_tiny_lm.json").is_file():
        info(
            f"tiny-lm: training a {settings.layers}-layer GPT-2 on stdlib docstrings "
            "(first use, cached afterwards)"
        )
        train_tiny_lm(directory, settings, show_progress)
    return directory


def causal_lm_task(tokenizer, directory: Path, context: int | None = None) -> CausalLMTask:
    """The held-out task for a causal LM: tiny-lm's own block length, else 128 tokens, never
    more than the model's `context` (a user's model with 64 positions reads blocks of 64)."""
    settings_file = Path(directory) / "wattwise_tiny_lm.json"
    block = (
        json.loads(settings_file.read_text())["block_tokens"] if settings_file.is_file() else 128
    )
    return CausalLMTask(tokenizer, min(block, context) if context else block)
