"""Localization scoring on the device, statistics and sanity measures (no model needed).

``score(attr, mask, metrics, brain_mask=None, *, spacing, polarity, smooth_fwhm_mm, preset, …)``
scores a batch of maps (``preset="siegel2025"``: the scoring of Siegel et al. 2025, see
``presets`` and ``siegel2025``); ``METRICS`` is the registry of metric names. ``stats`` holds bootstrap CIs,
paired tests and Holm correction; ``sanity`` the map-similarity measures of Adebayo et al. 2018.
"""
from . import localization, region, siegel2025  # noqa: F401  (register metrics)
from .localization import METRICS, score
from .profile import distance_profile

__all__ = ["METRICS", "distance_profile", "score"]
