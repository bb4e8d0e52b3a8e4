"""Attribution methods behind one registry (``METHODS``) and one call (``attribute``)."""
from .base import METHODS, attribute

__all__ = ["METHODS", "attribute"]
