"""`wattwise profile`: what running a model costs, measured the same way for every model.

One `Profile` per model: parameters, serialized size, FLOPs per sample, latency percentiles
and throughput per batch size, peak memory, quality on the held-out split, energy and carbon
with their provenance.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from wattwise.errors import ConfigError
from wattwise.measure.carbon import carbon_grams, grid_intensity
from wattwise.measure.energy import detect_energy_source
from wattwise.measure.flops import count_flops
from wattwise.measure.generation import profile_generation
from wattwise.measure.latency import LatencyStats, TimingSettings, time_repetitions, warm_up
from wattwise.measure.memory import track_peak_memory
from wattwise.measure.size import parameter_count, serialized_size_bytes
from wattwise.measure.water import water_band_litres, water_intensity, water_litres
from wattwise.models.registry import LoadedModel
from wattwise.progress import progress_bar
from wattwise.tasks.base import forward_on_its_device


@dataclass
class Profile:
    """What running a model costs. Units are in the field names.

    latency_ms and throughput_per_s are keyed by batch size (as a string, for JSON).
    energy_* are per inference (one sample) at `energy_batch_size`; `energy_source` says
    whether they were measured ("nvml", "rapl") or estimated ("estimate", ±uncertainty).
    carbon_g_per_1k is gCO2e per 1,000 inferences at the grid intensity of `region`.
    water_l_per_1k is litres of water per 1,000 inferences (on-site WUE + off-site generation,
    see measure/water.py), with its low/high band and source; None in profiles made before it.
    """

    model: str
    kind: str
    device: str
    threads: int
    inputs: str
    parameters: int
    size_bytes: int
    flops_per_sample: int | None
    batch_sizes: list[int]
    latency_ms: dict[str, LatencyStats]
    throughput_per_s: dict[str, float]
    peak_memory_bytes: int
    memory_source: str
    quality: dict[str, float]
    quality_ci95: dict[str, float]
    quality_split: str
    quality_samples: int
    energy_batch_size: int
    energy_j_per_inference: float
    energy_j_per_1k: float
    energy_j_per_1k_by_batch: dict[str, float]
    energy_source: str
    energy_uncertainty_pct: float
    energy_method: str
    carbon_g_per_1k: float
    region: str
    carbon_intensity_g_per_kwh: float
    carbon_source: str
    notes: list[str] = field(default_factory=list)
    flops_note: str = ""
    water_l_per_1k: float | None = None
    water_l_per_1k_band: list[float] | None = None
    water_source: str = ""
    generation: dict[str, Any] | None = None  # causal LMs: a GenerationProfile's dict

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """Inverse of to_dict."""
        data = dict(data)
        data["latency_ms"] = {k: LatencyStats(**v) for k, v in data["latency_ms"].items()}
        return cls(**data)

    def throughput_at(self, batch_size: int) -> float:
        """Samples per second at a batch size that was profiled."""
        return self.throughput_per_s[str(batch_size)]


def _synchronizer(device: str):
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return None


def _to_device(inputs: tuple[torch.Tensor, ...], device: str) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device) for t in inputs)


@dataclass(frozen=True)
class ProfileOverrides:
    """Facts about a model that its runnable form cannot measure itself.

    A variant exported to ONNX Runtime has no PyTorch graph to count FLOPs on, and its
    stored size is that of its files; the variant module measures these at export time.

    Attributes:
        flops_per_sample: FLOPs of one sample, counted before export (None: count now).
        flops_note: how the FLOPs were counted.
        notes: facts the profile must show (sparsity, kernels that gain nothing, ...).
        parameters: parameter count to report instead of counting the module's.
        size_bytes: stored size to report instead of serializing the module.
    """

    flops_per_sample: int | None = None
    flops_note: str | None = None
    notes: tuple[str, ...] = ()
    parameters: int | None = None
    size_bytes: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileOverrides:
        """From the `profile_overrides` mapping a variant manifest stores."""
        return cls(
            flops_per_sample=data.get("flops_per_sample"),
            flops_note=data.get("flops_note"),
            notes=tuple(data.get("notes", ())),
            parameters=data.get("parameters"),
            size_bytes=data.get("size_bytes"),
        )


def profile_model(
    loaded: LoadedModel,
    batch_sizes: tuple[int, ...] = (1, 32),
    *,
    device: str = "cpu",
    region: str | None = None,
    threads: int | None = None,
    timing: TimingSettings = TimingSettings(),
    evaluate: bool = True,
    quality_split: str = "test",
    show_progress: bool = True,
    overrides: ProfileOverrides | None = None,
    wue_l_per_kwh: float | None = None,
) -> Profile:
    """Measure `loaded` on `device`; see `Profile` for what comes back.

    `overrides` carries facts measured before export that the exported module cannot give
    (a variant's FLOPs counted on the PyTorch model, its stored size, its notes).

    Example:
        profile_model(load_model("digits-cnn"), batch_sizes=(1, 64))
    """
    if not batch_sizes or any(b <= 0 for b in batch_sizes):
        raise ConfigError(
            f"batch sizes must be positive integers, got {list(batch_sizes)}; e.g. --batch-sizes 1,32"
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available here; use --device cpu")
    if threads:
        torch.set_num_threads(threads)
    module = loaded.module.to(device) if _movable(loaded.module, device) else loaded.module
    module.eval()
    intensity = grid_intensity(region)
    water = water_intensity(intensity.region, wue_l_per_kwh)
    source = detect_energy_source(device)
    sync = _synchronizer(device)
    latency: dict[str, LatencyStats] = {}
    throughput: dict[str, float] = {}
    energy_by_batch: dict[str, float] = {}
    energy_per_inference = {}
    peak_bytes, memory_source = 0, ""
    window_notes: list[str] = []
    overrides = overrides or ProfileOverrides()
    with progress_bar(
        f"profiling {loaded.name}", total=len(batch_sizes) + 2, enabled=show_progress
    ) as bar:
        flops = overrides.flops_per_sample
        if flops is None:
            flops = count_flops(module, _to_device(loaded.task.example_inputs(1), device))
        bar.advance("FLOPs counted")
        for batch_size in sorted(batch_sizes):
            inputs = _to_device(loaded.task.example_inputs(batch_size), device)
            run = lambda inputs=inputs: module(*inputs)  # noqa: E731
            with torch.inference_mode(), track_peak_memory(device) as peak:
                # Warm-up (and any compilation it triggers) stays outside the energy window.
                warm_up(run, timing, sync)
                token = source.start()
                samples = time_repetitions(run, timing, sync)
                reading = source.stop(token)
            if peak.peak_bytes >= peak_bytes:
                peak_bytes, memory_source = peak.peak_bytes, peak.source
            stats = LatencyStats.from_samples(samples)
            key = str(batch_size)
            latency[key] = stats
            throughput[key] = batch_size / (stats.p50_ms / 1000.0)
            # The window holds exactly the timed samples: divide by them.
            per_inference = reading.energy_j / (len(samples) * batch_size)
            if reading.method != source.method:
                window_notes.append(f"energy at batch {batch_size}: {reading.method}")
            energy_per_inference[key] = per_inference
            energy_by_batch[key] = per_inference * 1000
            bar.advance(f"batch {batch_size}: p50 {stats.p50_ms:.2f} ms")
        quality = (
            loaded.task.evaluate(forward_on_its_device(module), quality_split) if evaluate else None
        )
        bar.advance("quality scored")
    generation = None
    if loaded.extra.get("causal_lm"):
        generation = profile_generation(loaded, device=device).to_dict()
    energy_batch = max(batch_sizes)
    per_1k = energy_by_batch[str(energy_batch)]
    notes = [*overrides.notes, *window_notes]
    return Profile(
        model=loaded.name,
        kind=loaded.kind,
        device=device if device != "cpu" else f"cpu ({platform.processor() or platform.machine()})",
        threads=torch.get_num_threads(),
        inputs=loaded.task.describe_inputs(),
        parameters=int(overrides.parameters or parameter_count(module)),
        size_bytes=int(overrides.size_bytes or serialized_size_bytes(module)),
        flops_per_sample=flops,
        batch_sizes=sorted(batch_sizes),
        latency_ms=latency,
        throughput_per_s=throughput,
        peak_memory_bytes=peak_bytes,
        memory_source=memory_source,
        quality=quality.metrics if quality else {},
        quality_ci95=quality.ci95 if quality else {},
        quality_split=quality.split if quality else "",
        quality_samples=quality.samples if quality else 0,
        energy_batch_size=energy_batch,
        energy_j_per_inference=energy_per_inference[str(energy_batch)],
        energy_j_per_1k=per_1k,
        energy_j_per_1k_by_batch=energy_by_batch,
        energy_source=source.name,
        energy_uncertainty_pct=source.uncertainty_pct,
        energy_method=source.method,
        carbon_g_per_1k=carbon_grams(per_1k, intensity),
        region=intensity.region,
        carbon_intensity_g_per_kwh=intensity.g_co2e_per_kwh,
        carbon_source=f"{intensity.source} ({intensity.year})"
        + (f"; {intensity.note}" if intensity.note else ""),
        notes=notes,
        flops_note=overrides.flops_note
        or (
            "torch.utils.flop_counter, batch of 1"
            if flops is not None
            else "not countable for this model"
        ),
        water_l_per_1k=water_litres(per_1k, water),
        water_l_per_1k_band=list(water_band_litres(per_1k, water)),
        water_source=water.source,
        generation=generation,
    )


def _movable(module: torch.nn.Module, device: str = "cpu") -> bool:
    """Whether `module` must be moved: not an ONNX session, and not already on `device`
    (moving a model whose weights are quantized tensor subclasses can fail, so never move
    one that is already there)."""
    if hasattr(module, "session"):
        return False
    target = torch.device(device)
    return any(p.device.type != target.type for p in module.parameters())
