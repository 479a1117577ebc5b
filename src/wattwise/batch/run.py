"""Run a model over a large input file in resumable, atomically written chunks.

The output directory holds `batch_state.json` (model, input hash, batch size, chunk size:
fixed by the first run), `chunks/chunk-NNNNNN.npz` (each written to a temp file, fsynced,
renamed: a chunk exists whole or not at all) and, at the end, `outputs.npz` in input order
plus `batch_result.json`. A run that finds the state continues: chunks on disk are checked
and kept, the others computed. Batches are the same in every run, so a resumed run's output
is identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wattwise.batch.calibrate import DEFAULT_CANDIDATES, BatchSizeChoice, choose_batch_size
from wattwise.batch.inputs import BatchInputs, model_inputs, read_inputs
from wattwise.compress.variant import open_model
from wattwise.errors import ConfigError
from wattwise.measure.carbon import carbon_grams, grid_intensity
from wattwise.measure.energy import detect_energy_source
from wattwise.measure.water import water_intensity, water_litres
from wattwise.models.registry import LoadedModel, ModelOptions
from wattwise.paths import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from wattwise.progress import progress_bar

STATE_NAME = "batch_state.json"
OUTPUT_NAME = "outputs.npz"
RESULT_NAME = "batch_result.json"


@dataclass
class BatchResult:
    """What a batch run did and cost. Energy sums the chunks' measured (or estimated) windows;
    work lost in a killed chunk is not in it."""

    model: str
    input_path: str
    output_path: str
    inputs: int
    output_kind: str
    batch_size: int
    chunk_inputs: int
    chunks: int
    chunks_reused: int
    energy_j: float
    energy_j_per_input: float
    energy_source: str
    energy_uncertainty_pct: float
    energy_method: str
    carbon_g: float
    water_l: float
    region: str
    seconds: float
    batch_size_trials: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def _order_digest(order: list[int]) -> str:
    return hashlib.sha256(json.dumps(order).encode()).hexdigest()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _load_or_create_state(
    out_dir: Path,
    loaded: LoadedModel,
    inputs: BatchInputs,
    batch_size: int | None,
    chunk_size: int,
    device: str,
    candidates: tuple[int, ...],
) -> dict[str, Any]:
    state_path = out_dir / STATE_NAME
    identity = {
        "model": loaded.name,
        "input_sha256": inputs.file_sha256,
        "inputs": len(inputs),
        "order_sha256": _order_digest(inputs.order),
    }
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        changed = [key for key, value in identity.items() if state.get(key) != value]
        if changed:
            raise ConfigError(
                f"{out_dir} holds a run of another {' and '.join(changed)}; pass a new --out "
                "or delete that directory"
            )
        if batch_size and batch_size != state["batch_size"]:
            raise ConfigError(
                f"{out_dir} was started with --batch-size {state['batch_size']}; resume with it "
                "(or leave --batch-size out), or pass a new --out"
            )
        return state
    choice: BatchSizeChoice | None = None
    if not batch_size:
        choice = choose_batch_size(loaded, inputs, candidates, device)
        batch_size = choice.batch_size
    chunk_inputs = math.ceil(chunk_size / batch_size) * batch_size
    state = {**identity, "batch_size": batch_size, "chunk_inputs": chunk_inputs}
    if choice is not None:
        state["batch_size_trials"] = [asdict(t) for t in choice.trials]
        state["batch_size_energy_source"] = choice.energy_source
    atomic_write_text(state_path, json.dumps(state, indent=2))
    return state


def _chunk_is_complete(path: Path, positions: list[int]) -> bool:
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["positions"].tolist() == positions
    except (OSError, ValueError, KeyError):
        return False


def run_batch(
    model: str,
    input_path: str | Path,
    out_dir: str | Path,
    batch_size: int | None = None,
    chunk_size: int = 1024,
    device: str = "cpu",
    region: str | None = None,
    options: ModelOptions | None = None,
    candidates: tuple[int, ...] = DEFAULT_CANDIDATES,
    wue_l_per_kwh: float | None = None,
    show_progress: bool = True,
) -> BatchResult:
    """Embed or classify every input of `input_path` with `model`, resumably; see the module.

    Example:
        r = run_batch("minilm", "texts.jsonl", "out/"); np.load(r.output_path)["outputs"]
    """
    if batch_size is not None and batch_size <= 0:
        raise ConfigError(f"--batch-size must be ≥ 1, got {batch_size}")
    if chunk_size <= 0:
        raise ConfigError(f"--chunk-size must be ≥ 1, got {chunk_size}")
    started = time.perf_counter()
    loaded = open_model(model, options)
    module = loaded.module.eval()
    if hasattr(module, "to") and not hasattr(module, "session"):
        module.to(device)
    inputs = read_inputs(input_path, loaded)
    out = ensure_writable_dir(Path(out_dir))
    chunk_dir = ensure_writable_dir(out / "chunks")
    for stale in chunk_dir.glob(".chunk-*.tmp"):  # a write cut short by a kill
        stale.unlink(missing_ok=True)
    state = _load_or_create_state(out, loaded, inputs, batch_size, chunk_size, device, candidates)
    size, per_chunk = state["batch_size"], state["chunk_inputs"]
    chunk_count = math.ceil(len(inputs) / per_chunk)
    source = detect_energy_source(device)
    reused = 0
    with (
        progress_bar(f"batch {loaded.name}", chunk_count, enabled=show_progress) as bar,
        torch.inference_mode(),
    ):
        for index in range(chunk_count):
            positions = inputs.order[index * per_chunk : (index + 1) * per_chunk]
            path = chunk_dir / f"chunk-{index:06d}.npz"
            if _chunk_is_complete(path, positions):
                reused += 1
                bar.advance(f"chunk {index} already done")
                continue
            token = source.start()
            outputs = [
                module(
                    *(t.to(device) for t in model_inputs(loaded, inputs, positions[i : i + size]))
                )
                .float()
                .cpu()
                for i in range(0, len(positions), size)
            ]
            reading = source.stop(token)
            atomic_write_bytes(
                path,
                _npz_bytes(
                    positions=np.asarray(positions, dtype=np.int64),
                    outputs=torch.cat(outputs).numpy(),
                    energy_j=np.asarray(reading.energy_j),
                ),
            )
            bar.advance(f"chunk {index}: {len(positions)} inputs")
    return _assemble(
        out, loaded, inputs, state, chunk_count, reused, source, region, wue_l_per_kwh,
        time.perf_counter() - started, str(input_path),
    )  # fmt: skip


def _assemble(
    out, loaded, inputs, state, chunk_count, reused, source, region, wue, seconds, input_path
) -> BatchResult:
    """Join the chunks into `outputs.npz` (file order) and write `batch_result.json`."""
    results: np.ndarray | None = None
    seen = np.zeros(len(inputs), dtype=np.int64)
    energy_j = 0.0
    for index in range(chunk_count):
        with np.load(out / "chunks" / f"chunk-{index:06d}.npz", allow_pickle=False) as data:
            positions, outputs = data["positions"], data["outputs"]
            energy_j += float(data["energy_j"])
        if results is None:
            results = np.zeros((len(inputs), *outputs.shape[1:]), dtype=outputs.dtype)
        results[positions] = outputs
        seen[positions] += 1
    if not (seen == 1).all():  # a broken invariant, never a user error
        raise RuntimeError("batch chunks do not cover every input exactly once")
    arrays = {"outputs": results, "ids": np.asarray(inputs.ids)}
    if loaded.task.output_kind == "logits":
        arrays["labels"] = results.argmax(axis=1)
    atomic_write_bytes(out / OUTPUT_NAME, _npz_bytes(**arrays))
    intensity = grid_intensity(region)
    water = water_intensity(intensity.region, wue)
    trials = state.get("batch_size_trials", [])
    notes = (
        [f"{reused} of {chunk_count} chunks were already on disk (resumed run)"] if reused else []
    )
    if trials:
        notes.append(
            f"batch size {state['batch_size']} chosen by measured energy per input "
            f"({state.get('batch_size_energy_source', source.name)}) over {len(trials)} sizes"
        )
    result = BatchResult(
        model=loaded.name,
        input_path=input_path,
        output_path=str(out / OUTPUT_NAME),
        inputs=len(inputs),
        output_kind=loaded.task.output_kind,
        batch_size=state["batch_size"],
        chunk_inputs=state["chunk_inputs"],
        chunks=chunk_count,
        chunks_reused=reused,
        energy_j=energy_j,
        energy_j_per_input=energy_j / len(inputs),
        energy_source=source.name,
        energy_uncertainty_pct=source.uncertainty_pct,
        energy_method=source.method,
        carbon_g=carbon_grams(energy_j, intensity),
        water_l=water_litres(energy_j, water),
        region=intensity.region,
        seconds=seconds,
        batch_size_trials=trials,
        notes=notes,
    )
    atomic_write_text(out / RESULT_NAME, json.dumps(result.to_dict(), indent=2))
    return result
