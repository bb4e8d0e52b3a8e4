"""neuroxai: validate explanation methods on 3D brain-MRI models against known-signal ground truth."""
from .errors import NeuroXAIError

__version__ = "0.1.0"
__all__ = ["NeuroXAIError", "__version__"]
