"""Attribution methods behind one registry and one call: ``attribute(model, x, target, method, **params)``."""
from . import baselines, cam, deeplift, gradients, lrp, occlusion, smoothgrad  # noqa: F401  (register methods)
from .base import METHODS, attribute

__all__ = ["METHODS", "attribute"]
