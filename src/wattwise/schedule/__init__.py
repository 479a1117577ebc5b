"""Run a job in the greenest window before its deadline (`wattwise schedule`)."""

from wattwise.schedule.forecast import IntensityPoint, read_forecast
from wattwise.schedule.plan import SchedulePlan, plan_window, window_mean_intensity
from wattwise.schedule.run import ScheduleResult, schedule_job

__all__ = [
    "IntensityPoint",
    "SchedulePlan",
    "ScheduleResult",
    "plan_window",
    "read_forecast",
    "schedule_job",
    "window_mean_intensity",
]
