"""The registries of every layer, gathered in the one place that knows the whole pipeline."""
from __future__ import annotations


def registries() -> dict:
    from ..attribution import METHODS
    from ..models import MODELS
    from ..scoring import METRICS
    from ..tasks import TASKS

    return {"tasks": TASKS, "models": MODELS, "methods": METHODS, "metrics": METRICS}


def known_names() -> dict[str, list[str]]:
    return {k: r.names() for k, r in registries().items()}
