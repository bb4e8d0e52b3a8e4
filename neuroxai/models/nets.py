"""Architectures behind ``MODELS``: ``factory(in_channels=1, n_outputs=2, **params) -> nn.Module``.

Every model maps ``(B, 1, D, H, W)`` to ``(B, n_outputs)`` logits and uses only layers the LRP
engine supports (Conv3d, BatchNorm3d, ReLU, MaxPool3d, AvgPool3d, Dropout, Flatten, Linear;
MONAI ResNet residual sums via its canonizer).
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..registry import Registry

MODELS: Registry = Registry("model")


@MODELS.register("sfcn")
def sfcn(in_channels: int = 1, n_outputs: int = 2, channels: Sequence[int] = (32, 64, 128, 256, 256, 64),
         dropout: float = 0.5) -> nn.Sequential:
    """SFCN (Peng et al. 2021, "Accurate brain age prediction with lightweight deep neural
    networks", Med. Image Anal. 68:101871): five conv3-BN-maxpool2-ReLU blocks, a conv1-BN-ReLU
    block, global average pooling, dropout and a 1×1×1 convolution as the classifier."""
    *blocks, last = channels
    layers: list[nn.Module] = []
    c_in = in_channels
    for c in blocks:
        layers += [nn.Conv3d(c_in, c, 3, padding=1), nn.BatchNorm3d(c), nn.MaxPool3d(2), nn.ReLU()]
        c_in = c
    layers += [nn.Conv3d(c_in, last, 1), nn.BatchNorm3d(last), nn.ReLU(),
               nn.AdaptiveAvgPool3d(1), nn.Dropout(dropout), nn.Conv3d(last, n_outputs, 1), nn.Flatten()]
    return nn.Sequential(*layers)


@MODELS.register("small_cnn")
def small_cnn(in_channels: int = 1, n_outputs: int = 2, channels: Sequence[int] = (8, 16, 32),
              dropout: float = 0.2) -> nn.Sequential:
    """A small SFCN-like CNN sized for the CPU demo (≈ 40×50×45 voxels at 4 mm)."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for c in channels:
        layers += [nn.Conv3d(c_in, c, 3, padding=1), nn.BatchNorm3d(c), nn.ReLU(), nn.MaxPool3d(2)]
        c_in = c
    layers += [nn.Conv3d(c_in, c_in, 3, padding=1), nn.BatchNorm3d(c_in), nn.ReLU(),
               nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, n_outputs)]
    return nn.Sequential(*layers)


@MODELS.register("resnet")
def resnet(in_channels: int = 1, n_outputs: int = 2, block: str = "basic",
           layers: Sequence[int] = (1, 1, 1, 1), block_inplanes: Sequence[int] = (16, 32, 64, 128)) -> nn.Module:
    """MONAI 3-D ResNet (He et al. 2016; ``monai.networks.nets.ResNet``)."""
    from monai.networks.nets import ResNet

    return ResNet(block=block, layers=list(layers), block_inplanes=list(block_inplanes), spatial_dims=3,
                  n_input_channels=in_channels, num_classes=n_outputs)


@MODELS.register("densenet121")
def densenet121(in_channels: int = 1, n_outputs: int = 2, dropout: float = 0.0) -> nn.Module:
    """MONAI 3-D DenseNet121 (Huang et al. 2017; ``monai.networks.nets.DenseNet121``)."""
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=3, in_channels=in_channels, out_channels=n_outputs, dropout_prob=dropout)
