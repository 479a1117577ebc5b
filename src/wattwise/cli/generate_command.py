"""`wattwise generate MODEL --prompt TEXT`: greedy text from a causal LM, with its timings."""

from __future__ import annotations

import typer
from rich.text import Text

from wattwise.cli import app
from wattwise.cli.common import JSON_OPTION, print_json
from wattwise.progress import result_console as console


@app.command()
def generate(
    model: str = typer.Argument(..., help="tiny-lm, a Hugging Face causal-LM dir or a variant."),
    prompt: str = typer.Option(..., "--prompt", help="Text to continue."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Tokens to generate at most."),
    draft: str = typer.Option(
        None,
        "--draft",
        help="Speculative decoding: a draft model spec, 'auto' (wattwise builds a small draft "
        "network from MODEL), 'lookup' (wattwise distils MODEL's next tokens into n-gram "
        "tables, plus prompt lookup) or a saved lookup draft directory.",
    ),
    no_kv_cache: bool = typer.Option(
        False, "--no-kv-cache", help="Recompute the whole prefix every step (for comparison)."
    ),
    compile_decode: bool = typer.Option(
        False,
        "--compile",
        help="Compile the decode step (transformers' static KV cache + torch.compile): "
        "seconds to compile once, then faster tokens; pays for long outputs.",
    ),
    ignore_eos: bool = typer.Option(
        False,
        "--ignore-eos",
        help="Generate exactly --max-new-tokens tokens, never stopping at end-of-text (timing).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Continue PROMPT greedily with MODEL (KV cache on); with --draft, by speculative decoding."""
    from wattwise.api import generate as run_generate

    result = run_generate(
        model,
        prompt,
        max_new_tokens,
        draft,
        kv_cache=not no_kv_cache,
        show_progress=not as_json,
        compiled=compile_decode,
        ignore_eos=ignore_eos,
    )
    if as_json:
        print_json(result.to_dict())
        return
    console.print(Text.assemble((result.prompt, "bold"), result.text))
    console.print(
        f"{result.new_tokens} tokens in {result.seconds:.3f} s: {result.tokens_per_s:.1f} tokens/s, "
        f"first token {result.ttft_ms:.1f} ms, KV cache {'on' if result.kv_cache else 'off'}"
        + (
            f", compiled (compiling took {result.compile_s:.1f} s, not counted)"
            if result.compiled
            else ""
        )
    )
    if result.draft:
        console.print(
            f"draft: {result.draft}; acceptance {result.acceptance_rate:.2f}; target alone "
            f"{result.target_alone_tokens_per_s:.1f} tokens/s → speed-up {result.speedup:.2f}x; "
            f"identical to the target's greedy output: {result.identical_to_target}"
        )
