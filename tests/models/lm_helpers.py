"""Small causal LMs for tests: tiny-lm's "test" preset, and a user directory built here."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_lm():
    """The built-in tiny-lm ("test" preset from conftest), trained once per test run."""
    from wattwise.models.registry import load_model

    return load_model("tiny-lm")


def write_user_causal_lm(directory: Path, layers: int = 2, architecture: str = "gpt2") -> Path:
    """A user's Hugging Face causal-LM directory: a random 2-layer model and a word tokenizer.
    `architecture`: "gpt2", or "llama" (rotary positions, RMSNorm, grouped key/value heads)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    words = ["<eos>", "<unk>"] + [f"w{i}" for i in range(62)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>"
    )
    torch.manual_seed(0)
    if architecture == "llama":
        config = LlamaConfig(
            vocab_size=len(words),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            eos_token_id=0,
            bos_token_id=0,
        )
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(
            vocab_size=len(words), n_positions=64, n_embd=16, n_layer=layers, n_head=2
        )
        model = GPT2LMHeadModel(config)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
