"""bench/optimize.py: `wattwise optimize` on MiniLM vs fp32 eager and the best single library.

One run on this machine: minilm, batch 32, inputs of 128 real tokens from the task's corpus,
budget fidelity >= 0.99, objective throughput. Prints:
- the chosen variant's throughput ÷ fp32 eager PyTorch (goal ≥4x),
- ÷ the best candidate that a user could reach by hand with one library and that meets the
  same budget (goal ≥1.2x), with which libraries each candidate needs,
- the peers' one-call defaults and whether they meet the budget,
- the wall time of the whole optimize run (the `make demo` command uses --time-limit 120s).

    flock /tmp/wattwise-cpu.lock .venv/bin/python bench/optimize.py [--time-limit 480]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import wattwise


def libraries(recipe: dict) -> set[str]:
    """Which peer libraries a recipe needs (torch.compile and casts are plain PyTorch)."""
    needed = set()
    if recipe.get("backend", {}).get("name") == "onnxruntime":
        needed.add("onnxruntime")
    for entry in recipe.get("steps", []):
        for kind, fields in entry.items():
            implementation = fields.get("implementation", "")
            if implementation == "torchao" or fields.get("method", "").endswith("weight_only"):
                needed.add("torchao")
            elif kind in ("prune", "drop_layers") and fields.get("method") == "structured":
                needed.add("torch-pruning")
    return needed or {"pytorch"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=480.0, help="search time limit, s")
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="wattwise-bench-optimize-")
    started = time.perf_counter()
    result = wattwise.optimize(
        "minilm",
        budget="fidelity>=0.99",
        objective="throughput",
        batch_size=32,
        time_limit_s=args.time_limit,
        out=out,
    )
    wall = time.perf_counter() - started
    base = result.baseline.profile["throughput_per_s"]["32"]
    print(f"\noptimize wall time: {wall:.0f} s (time limit {args.time_limit:.0f} s); report {out}")
    print(
        "\n| candidate | libraries | samples/s (bs 32, val) | × fp32 eager | fidelity (val) | "
        "within budget |"
    )
    print("|---|---|---|---|---|---|")
    print(f"| fp32 eager (original) | pytorch | {base:.1f} | 1.00 | 1.0000 | yes |")
    single = []
    for r in result.candidates:
        if r.status != "measured":
            print(f"| {r.label} | – | {r.status}: {r.reason[:60]} | | | |")
            continue
        rate = r.profile["throughput_per_s"]["32"]
        libs = libraries(r.recipe)
        peer = f" (peer: {r.peer})" if r.peer else ""
        print(
            f"| {r.label}{peer} | {', '.join(sorted(libs))} | {rate:.1f} | {rate / base:.2f} | "
            f"{r.quality['fidelity']:.4f} | {'yes' if r.within_budget else 'no'} |"
        )
        if r.within_budget and len(libs) == 1 and not r.slower_than_original:
            single.append((rate, r))
    if result.chosen is None:
        print("\nno candidate met the budget")
        return
    chosen = next(r for r in result.candidates if r.id == result.chosen.id)
    chosen_rate = chosen.profile["throughput_per_s"]["32"]
    best_rate, best = max(single, key=lambda pair: pair[0])
    test = (
        result.chosen_profile["throughput_per_s"]["32"]
        / result.baseline_profile["throughput_per_s"]["32"]
    )
    print(f"\nchosen: {chosen.label} ({', '.join(sorted(libraries(chosen.recipe)))})")
    print(
        f"chosen ÷ fp32 eager: {chosen_rate / base:.2f}x in the search; {test:.2f}x in the final "
        "held-out profile (goal ≥4x)"
    )
    print(
        f"best single-library configuration within budget: {best.label} ({best_rate:.1f}/s); "
        f"chosen ÷ it: {chosen_rate / best_rate:.2f}x (goal ≥1.2x)"
    )
    print(
        f"held-out fidelity of the chosen variant: {result.chosen_profile['quality']['fidelity']:.4f}"
    )


if __name__ == "__main__":
    main()
