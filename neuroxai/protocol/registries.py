"""The registries of every layer, gathered in the one place that knows the whole pipeline."""
from __future__ import annotations

import inspect


def registries() -> dict:
    from ..attribution import METHODS
    from ..models import MODELS
    from ..scoring import METRICS
    from ..tasks import TASKS

    return {"tasks": TASKS, "models": MODELS, "methods": METHODS, "metrics": METRICS}


def known_names() -> dict[str, list[str]]:
    return {k: r.names() for k, r in registries().items()}


def method_params(name: str) -> list[str] | None:
    """The keyword parameters ``METHODS[name]`` accepts (its API), or ``None`` if it takes
    ``**kwargs`` (then it checks them itself)."""
    from ..attribution import METHODS

    sig = inspect.signature(METHODS[name])
    kinds = [p.kind for p in sig.parameters.values()]
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return None
    return [n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
