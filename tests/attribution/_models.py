"""Small 3-D models shared by the attribution tests (float64-capable, deterministic init)."""
from __future__ import annotations

import torch
from torch import nn


def small_cnn(seed: int = 0, n_out: int = 2, bn: bool = True) -> nn.Sequential:
    """Conv-BN-ReLU-MaxPool ×2 → AdaptiveAvgPool → Flatten → Linear. Input (B,1,16,16,16)+."""
    g = torch.Generator().manual_seed(seed)
    layers = [nn.Conv3d(1, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm3d(4))
    layers += [nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(4, 8, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm3d(8))
    layers += [nn.ReLU(), nn.MaxPool3d(2), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, n_out)]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in model.modules():  # non-trivial BN statistics so canonization is really tested
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def sfcn_like(seed: int = 0, n_out: int = 2, channels=(4, 8, 8)) -> nn.Sequential:
    """SFCN-style blocks (conv-BN-maxpool-ReLU), then 1×1×1 conv head, avg-pool, flatten."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    c_in = 1
    for c in channels:
        layers += [nn.Conv3d(c_in, c, 3, padding=1), nn.BatchNorm3d(c), nn.MaxPool3d(2), nn.ReLU()]
        c_in = c
    layers += [nn.Conv3d(c_in, c_in, 1), nn.BatchNorm3d(c_in), nn.ReLU(),
               nn.AdaptiveAvgPool3d(1), nn.Dropout(0.5), nn.Conv3d(c_in, n_out, 1), nn.Flatten()]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def monai_resnet(seed: int = 0, n_out: int = 2) -> nn.Module:
    """A small MONAI 3-D ResNet (residual additions, BN) with a 2-class head."""
    from monai.networks.nets import ResNet

    torch.manual_seed(seed)
    model = ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(4, 8, 8, 8), spatial_dims=3,
                   n_input_channels=1, num_classes=n_out, conv1_t_size=3, conv1_t_stride=1)
    return model.eval()


def linear_model(shape=(6, 6, 6), seed: int = 0, n_out: int = 2) -> nn.Sequential:
    """Flatten → Linear: gradient = weights, input×gradient sums to logit − bias."""
    g = torch.Generator().manual_seed(seed)
    n = shape[0] * shape[1] * shape[2]
    model = nn.Sequential(nn.Flatten(), nn.Linear(n, n_out))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(n_out, n, generator=g))
        model[1].bias.copy_(torch.randn(n_out, generator=g))
    return model.eval()
