"""Architectures behind ``MODELS``: ``factory(in_channels=1, n_outputs=2, **params) -> nn.Module``.

Every model maps ``x: (B, in_channels, D, H, W) float`` to ``(B, n_outputs)`` logits (regression:
``n_outputs=1``) and uses only layers the LRP engine supports (Conv3d, BatchNorm3d, ReLU,
MaxPool3d, AvgPool3d / AdaptiveAvgPool3d, Dropout, Flatten, Linear; the MONAI ResNet's residual
sums and DenseNet's concatenations are handled by the attribution layer). ReLUs are never in-place
so that hooks see the pre-activation tensors.

A parameter a factory does not know is a ``ConfigError`` naming the key and the allowed ones,
because the parameters come from ``configs/models/*.yaml`` and the protocol.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

MODELS: Registry = Registry("model")


def _architecture(name: str) -> Callable:
    """Register ``fn`` under ``name``; an unknown keyword argument is a ``ConfigError`` naming the
    allowed ones (:meth:`Registry.check`), a bad value one naming the model."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def factory(*args, **params) -> nn.Module:
            MODELS.check(name, params, path="model.params")
            try:
                return fn(*args, **params)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"cannot build model {name!r} from {params}", expected=MODELS.params(name),
                                  found=f"{type(exc).__name__}: {exc}",
                                  fix="check the values in the model config / model.params") from exc

        return MODELS.register(name)(factory)

    return deco


@_architecture("sfcn")
def sfcn(in_channels: int = 1, n_outputs: int = 2,
         channels: Sequence[int] = (32, 64, 128, 256, 256, 64), dropout: float = 0.5) -> nn.Sequential:
    """Simple Fully Convolutional Network (Peng et al. 2021, "Accurate brain age prediction with
    lightweight deep neural networks", Med. Image Anal. 68:101871).

    ``channels[:-1]`` are the conv3×3×3-BN-maxpool2-ReLU blocks (paper: 32-64-128-256-256),
    ``channels[-1]`` the conv1×1×1-BN-ReLU block (paper: 64); then global average pooling (the
    paper's ``AvgPool3d([5, 6, 5])`` on its 160×192×160 input, here adaptive so any grid works),
    dropout 0.5 and a 1×1×1 convolution to ``n_outputs``, flattened to ``(B, n_outputs)`` logits.
    The default config has 2.95 M parameters (the paper: "about 3 million"). The paper's
    log-softmax over soft age bins is left to the loss. Input needs each side ≥ 2**(len(channels)-1).
    """
    channels = [int(c) for c in channels]
    if len(channels) < 2:
        raise ValueError(f"channels needs ≥ 2 entries (conv blocks + the 1×1×1 block), got {channels}")
    *blocks, last = channels
    layers: list[nn.Module] = []
    c_in = in_channels
    for c in blocks:
        layers += [nn.Conv3d(c_in, c, 3, padding=1), nn.BatchNorm3d(c), nn.MaxPool3d(2), nn.ReLU(inplace=False)]
        c_in = c
    layers += [nn.Conv3d(c_in, last, 1), nn.BatchNorm3d(last), nn.ReLU(inplace=False),
               nn.AdaptiveAvgPool3d(1), nn.Dropout(dropout), nn.Conv3d(last, n_outputs, 1), nn.Flatten()]
    return nn.Sequential(*layers)


@_architecture("small_cnn")
def small_cnn(in_channels: int = 1, n_outputs: int = 2, channels: Sequence[int] = (8, 16, 32),
              dropout: float = 0.2, batch_norm: bool = True) -> nn.Sequential:
    """A small SFCN-like CNN sized for the CPU demo (4 mm brains, about 40×48×40 voxels).

    ``len(channels)`` conv3×3×3-BN-ReLU-maxpool2 blocks, one more conv3×3×3-BN-ReLU at the last
    width (so the deepest feature map keeps a 3×3×3 receptive field for Grad-CAM), global average
    pooling, dropout and a linear layer to ``(B, n_outputs)`` logits. Default: 45 k parameters.
    ``batch_norm=False`` drops the BatchNorm layers (e.g. for DDP training on CPU, where PyTorch
    has no SyncBatchNorm).
    """
    norm = (lambda c: nn.BatchNorm3d(c)) if batch_norm else (lambda c: nn.Identity())
    channels = [int(c) for c in channels]
    if not channels:
        raise ValueError("channels needs ≥ 1 entry")
    layers: list[nn.Module] = []
    c_in = in_channels
    for c in channels:
        layers += [nn.Conv3d(c_in, c, 3, padding=1), norm(c), nn.ReLU(inplace=False), nn.MaxPool3d(2)]
        c_in = c
    layers += [nn.Conv3d(c_in, c_in, 3, padding=1), norm(c_in), nn.ReLU(inplace=False),
               nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, n_outputs)]
    return nn.Sequential(*layers)


_NO_INPLACE = ("relu", {"inplace": False})


def _no_inplace(model: nn.Module) -> nn.Module:
    """MONAI's ResNet blocks build ``ReLU(inplace=True)`` whatever ``act`` says (monai 1.6)."""
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


@_architecture("resnet")
def resnet(in_channels: int = 1, n_outputs: int = 2, block: str = "basic",
           layers: Sequence[int] = (1, 1, 1, 1), block_inplanes: Sequence[int] = (16, 32, 64, 128),
           conv1_t_size: int = 7, conv1_t_stride: int = 1, no_max_pool: bool = False) -> nn.Module:
    """MONAI 3-D ResNet (He et al. 2016, "Deep residual learning for image recognition";
    ``monai.networks.nets.ResNet``). ``layers=(1,1,1,1)`` is ResNet-10, ``(2,2,2,2)`` ResNet-18,
    ``block="bottleneck", layers=(3,4,6,3)`` ResNet-50. The stem keeps MONAI's defaults (7³ conv,
    stride 1, then max-pool: overall stride 16), which suits 4 mm brains; ``conv1_t_stride=2`` is He's."""
    from monai.networks.nets import ResNet

    return _no_inplace(ResNet(block=block, layers=list(layers), block_inplanes=list(block_inplanes), spatial_dims=3,
                  n_input_channels=in_channels, num_classes=n_outputs, conv1_t_size=conv1_t_size,
                  conv1_t_stride=conv1_t_stride, no_max_pool=no_max_pool, act=_NO_INPLACE))


@_architecture("densenet121")
def densenet121(in_channels: int = 1, n_outputs: int = 2, dropout: float = 0.0,
                init_features: int = 64, growth_rate: int = 32) -> nn.Module:
    """MONAI 3-D DenseNet121 (Huang et al. 2017, "Densely connected convolutional networks";
    ``monai.networks.nets.DenseNet121``, block config 6-12-24-16, 11.2 M parameters at default)."""
    from monai.networks.nets import DenseNet121

    return _no_inplace(DenseNet121(spatial_dims=3, in_channels=in_channels, out_channels=n_outputs, dropout_prob=dropout,
                       init_features=init_features, growth_rate=growth_rate, act=_NO_INPLACE))
