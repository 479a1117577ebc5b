"""The Python twins of the CLI commands. Each returns the dataclass its command prints."""

from __future__ import annotations

from wattwise.measure.latency import TimingSettings
from wattwise.measure.profile import Profile, profile_model
from wattwise.models.registry import ModelOptions, load_model


def profile(
    model: str,
    batch_sizes: tuple[int, ...] = (1, 32),
    device: str = "cpu",
    region: str | None = None,
    threads: int | None = None,
    options: ModelOptions | None = None,
    timing: TimingSettings = TimingSettings(),
    show_progress: bool = False,
) -> Profile:
    """Load `model` (any spec `load_model` accepts) and measure it; see `Profile`.

    Example:
        p = wattwise.profile("digits-cnn", batch_sizes=(1, 32), region="FR")
        print(p.throughput_per_s["32"], p.energy_j_per_1k, p.energy_source)
    """
    loaded = load_model(model, options)
    return profile_model(
        loaded, batch_sizes, device, region, threads, timing, show_progress=show_progress
    )
