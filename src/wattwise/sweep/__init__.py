"""`wattwise sweep`: energy vs time over batch sizes, CPU threads and GPU power limits."""

from wattwise.sweep.run import SweepPoint, SweepResult, sweep_model, zeus_cost

__all__ = ["SweepPoint", "SweepResult", "sweep_model", "zeus_cost"]
