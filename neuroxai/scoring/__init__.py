"""Localization scoring on the device, statistics and sanity measures (no model needed)."""
from . import localization, region  # noqa: F401  (register metrics)
from .base import METRICS, score

__all__ = ["METRICS", "score"]
