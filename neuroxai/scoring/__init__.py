"""Localization scoring on the device, statistics and sanity measures (no model needed).

``score(attr, mask, metrics, brain_mask=None, *, spacing, polarity, smooth_fwhm_mm)`` scores a
batch of maps; ``METRICS`` is the registry of metric names. ``stats`` holds bootstrap CIs,
paired tests and Holm correction; ``sanity`` the map-similarity measures of Adebayo et al. 2018.
"""
from . import localization, region, siegel2025  # noqa: F401  (register metrics)
from .localization import METRICS, score
from .profile import distance_profile

__all__ = ["METRICS", "distance_profile", "score"]
