"""Known-signal tasks: labels plus, for every subject, where the label's signal lives."""
from . import known_signal, siegel2025, user_label  # noqa: F401  (registers the tasks)
from .base import TASKS, TaskData, build_task, make_split, residualize

__all__ = ["TASKS", "TaskData", "build_task", "make_split", "residualize"]
