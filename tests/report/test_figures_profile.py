"""The relevance-by-distance figure: PNG bytes, identical on a rebuild, and different inputs draw
a different figure."""
from __future__ import annotations

import numpy as np

from neuroxai.report.figures import distance_profiles

D = (0.0, 4.0, 8.0, 12.0, 16.0, 24.0)


def _inputs():
    vol = np.array([[0.01, 0.05, 0.12, 0.22, 0.35, 0.6], [0.012, 0.06, 0.13, 0.24, 0.37, 0.62]])
    profiles = {"gradcam": np.array([[0.3, 0.6, 0.8, 0.9, 0.95, 1.0], [np.nan] * 6]),
                "smoothgrad": np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.7], [0.12, 0.22, 0.3, 0.41, 0.5, 0.71]]),
                "lrp": np.array([0.2, 0.4, 0.5, 0.6, 0.7, 0.8])}
    return profiles, vol


def test_distance_profiles_is_deterministic_png():
    profiles, vol = _inputs()
    a = distance_profiles(D, profiles, vol, "region_volume: relevance by distance")
    b = distance_profiles(D, profiles, vol, "region_volume: relevance by distance")
    assert a.startswith(b"\x89PNG\r\n\x1a\n") and len(a) > 1000
    assert a == b
    profiles["lrp"] = profiles["lrp"][::-1].copy()
    assert distance_profiles(D, profiles, vol, "region_volume: relevance by distance") != a
