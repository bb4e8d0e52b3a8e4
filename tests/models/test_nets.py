"""Architectures: output shapes, the SFCN layer sequence and parameter count, config errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from neuroxai.errors import ConfigError
from neuroxai.models import MODELS

LRP_LAYERS = (nn.Sequential, nn.Conv3d, nn.BatchNorm3d, nn.ReLU, nn.MaxPool3d, nn.AvgPool3d,
              nn.AdaptiveAvgPool3d, nn.Dropout, nn.Flatten, nn.Linear)


def test_registry_names():
    assert MODELS.names() == ["densenet121", "resnet", "sfcn", "small_cnn"]


@pytest.mark.parametrize("arch", ["sfcn", "small_cnn", "resnet", "densenet121"])
def test_logits_shape_at_32(arch):
    torch.manual_seed(0)
    m = MODELS[arch](in_channels=1, n_outputs=3).eval()
    with torch.no_grad():
        x = torch.randn(1, 1, 32, 32, 32)
        y = m(torch.cat([x, 3 * x + 1]))
    assert y.shape == (2, 3) and torch.isfinite(y).all()
    # the two subjects give different logits: the output depends on the input
    assert not torch.allclose(y[0], y[1])
    # no in-place ReLU anywhere (hooks must see the pre-activation tensors)
    assert all(not r.inplace for r in m.modules() if isinstance(r, nn.ReLU))


def test_regression_head_and_non_cubic_grid():
    m = MODELS["small_cnn"](n_outputs=1).eval()
    with torch.no_grad():
        assert m(torch.randn(3, 1, 40, 48, 40)).shape == (3, 1)


def test_sfcn_layer_sequence_and_parameter_count():
    """Peng et al. 2021: conv3-BN-maxpool2-ReLU × 5 (32-64-128-256-256), conv1-BN-ReLU (64),
    avg-pool, dropout 0.5, conv1 head; about 3 M parameters."""
    m = MODELS["sfcn"]()
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Conv3d", "BatchNorm3d", "MaxPool3d", "ReLU"] * 5 + [
        "Conv3d", "BatchNorm3d", "ReLU", "AdaptiveAvgPool3d", "Dropout", "Conv3d", "Flatten"]
    convs = [x for x in m if isinstance(x, nn.Conv3d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs] == [
        (1, 32, 3, 1), (32, 64, 3, 1), (64, 128, 3, 1), (128, 256, 3, 1), (256, 256, 3, 1),
        (256, 64, 1, 0), (64, 2, 1, 0)]
    assert [x.kernel_size for x in m if isinstance(x, nn.MaxPool3d)] == [2] * 5
    assert m[-3].p == 0.5
    # by hand: Σ 27·cin·cout + cout over the 3³ convs, + 256·64+64, + 64·2+2, + 2·c per BN
    by_hand = sum(27 * a * b + b for a, b in [(1, 32), (32, 64), (64, 128), (128, 256), (256, 256)])
    by_hand += 256 * 64 + 64 + 64 * 2 + 2 + 2 * (32 + 64 + 128 + 256 + 256 + 64)
    assert sum(p.numel() for p in m.parameters()) == by_hand == 2_950_466


def test_sfcn_and_small_cnn_use_only_lrp_layers():
    for arch in ("sfcn", "small_cnn"):
        assert all(isinstance(x, LRP_LAYERS) for x in MODELS[arch]().modules()), arch


def test_sfcn_configurable_width():
    m = MODELS["sfcn"](channels=(4, 8, 8), dropout=0.1)
    convs = [(c.in_channels, c.out_channels) for c in m if isinstance(c, nn.Conv3d)]
    assert convs == [(1, 4), (4, 8), (8, 8), (8, 2)] and m[-3].p == 0.1


def test_unknown_parameter_names_key_and_choices():
    with pytest.raises(ConfigError, match="chanels") as e:
        MODELS["small_cnn"](chanels=(4, 8))
    assert "channels" in str(e.value) and "dropout" in str(e.value)
    with pytest.raises(ConfigError, match="sfcn"):
        MODELS["sfcn"](channels=(8,))
