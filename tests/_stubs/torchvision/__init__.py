"""Test-only stand-in for torchvision (no CPU build exists here).

zennit imports ``torchvision.models.resnet.{BasicBlock, Bottleneck}`` at import time for its
ResNet canonizer, and quantus imports zennit. Only these placeholders are needed; nothing in
neuroxai uses torchvision.
"""
__version__ = "0.0.0+neuroxai-stub"
from . import models  # noqa: E402,F401
