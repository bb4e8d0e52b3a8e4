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


class BasicBlock(nn.Module):
    """A torchvision-style 3-D basic block, ``out += residual`` in its forward: with ``relu1/relu2``
    (Hara et al.'s 3-D ResNet, as the study's resnet.py) or one ``relu`` used twice (torchvision)."""

    expansion = 1

    def __init__(self, c_in, planes, stride=1, downsample=None, hara=True):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        if hara:
            self.relu1, self.relu2 = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        else:
            self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def _act(self, i):
        return getattr(self, f"relu{i}", None) or self.relu

    def forward(self, x):
        residual = x
        out = self._act(1)(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self._act(2)(out)


class Bottleneck(nn.Module):
    """A torchvision-style 3-D bottleneck block (1×1×1, 3×3×3, 1×1×1 convolutions, expansion 4)."""

    expansion = 4

    def __init__(self, c_in, planes, stride=1, downsample=None, hara=True):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        if hara:
            self.relu1, self.relu2, self.relu3 = nn.ReLU(inplace=True), nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        else:
            self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def _act(self, i):
        return getattr(self, f"relu{i}", None) or self.relu

    def forward(self, x):
        residual = x
        out = self._act(1)(self.bn1(self.conv1(x)))
        out = self._act(2)(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self._act(3)(out)


class TorchvisionStyleResNet3D(nn.Module):
    """Stem conv-BN-ReLU-maxpool, two stages of ``block`` (the second strided, with a 1×1×1
    conv + BN downsample), global average pooling, a linear head: the layout of the study's
    resnet.py at toy width."""

    def __init__(self, block, widths=(4, 8), hara=True, n_out=2):
        super().__init__()
        self.conv1 = nn.Conv3d(1, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        c, layers = widths[0], []
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or c != w * block.expansion:
                down = nn.Sequential(nn.Conv3d(c, w * block.expansion, 1, stride, bias=False),
                                     nn.BatchNorm3d(w * block.expansion))
            layers.append(nn.Sequential(block(c, w, stride, down, hara), block(w * block.expansion, w, 1, None, hara)))
            c = w * block.expansion
        self.layer1, self.layer2 = layers
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(c, n_out)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(self.avgpool(x).view(x.size(0), -1))


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so canonization is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def torchvision_resnet(block: str = "basic", hara: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cls = BasicBlock if block == "basic" else Bottleneck
    return randomize_bn(TorchvisionStyleResNet3D(cls, hara=hara), seed).eval()


def monai_densenet(seed: int = 0, full: bool = False) -> nn.Module:
    """MONAI's 3-D DenseNet: ``DenseNet121`` (``full=True``, ≥ 32³ input) or the same class at toy
    size (init 8 features, growth 4, blocks (2, 2, 2)), BatchNorm statistics randomized."""
    from monai.networks.nets import DenseNet, DenseNet121

    torch.manual_seed(seed)
    if full:
        model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
    else:
        model = DenseNet(spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
                         block_config=(2, 2, 2), bn_size=2)
    return randomize_bn(model, seed).eval()


class _DenseLayer(nn.Sequential):
    """BN-ReLU-1×1×1 conv-BN-ReLU-3×3×3 conv, its output concatenated to its input."""

    def __init__(self, c_in, growth, bn_size):
        super().__init__()
        self.add_module("norm1", nn.BatchNorm3d(c_in))
        self.add_module("relu1", nn.ReLU(inplace=True))
        self.add_module("conv1", nn.Conv3d(c_in, bn_size * growth, 1, bias=False))
        self.add_module("norm2", nn.BatchNorm3d(bn_size * growth))
        self.add_module("relu2", nn.ReLU(inplace=True))
        self.add_module("conv2", nn.Conv3d(bn_size * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, super().forward(x)], 1)


class DenseNet(nn.Module):
    """A Hara et al.-style 3-D DenseNet (the study's densenet.py layout at toy size): ``features``
    ending in a BatchNorm, then a *functional* ReLU and global average pooling, then
    ``classifier``."""

    def __init__(self, init=8, growth=4, blocks=(2, 2), bn_size=2, n_out=2):
        super().__init__()
        feats = [("conv1", nn.Conv3d(1, init, 3, padding=1, bias=False)), ("norm1", nn.BatchNorm3d(init)),
                 ("relu1", nn.ReLU(inplace=True)), ("pool1", nn.MaxPool3d(3, 2, 1))]
        c = init
        for i, n in enumerate(blocks):
            for j in range(n):
                feats.append((f"denseblock{i + 1}_{j}", _DenseLayer(c + j * growth, growth, bn_size)))
            c += n * growth
            if i != len(blocks) - 1:
                feats.append((f"transition{i + 1}", nn.Sequential(
                    nn.BatchNorm3d(c), nn.ReLU(inplace=True), nn.Conv3d(c, c // 2, 1, bias=False), nn.AvgPool3d(2))))
                c //= 2
        feats.append(("norm5", nn.BatchNorm3d(c)))
        from collections import OrderedDict

        self.features = nn.Sequential(OrderedDict(feats))
        self.classifier = nn.Linear(c, n_out)

    def forward(self, x):
        features = self.features(x)
        out = torch.nn.functional.relu(features, inplace=True)
        out = torch.nn.functional.adaptive_avg_pool3d(out, (1, 1, 1)).view(features.size(0), -1)
        return self.classifier(out)


def hara_densenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(DenseNet(), seed).eval()
