"""The study's (Siegel et al. 2025) gradient and CAM methods in float64 on small 3-D CNNs, against
Captum and against the methods' published definitions written out here.

Criterion for the reference library (as test_reference_captum_monai.py):
max |ours − ref| ≤ 1e-5 × max |ref| (most agree to ~1e-12).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuroxai.attribution import attribute
from neuroxai.attribution.cam import first_component

from ._models import linear_model, monai_resnet, sfcn_like, small_cnn

captum_attr = pytest.importorskip("captum.attr")

DT = torch.float64
MODELS = {"small_cnn": small_cnn, "sfcn_like": sfcn_like, "monai_resnet": monai_resnet}
CAM_LAYER = {"small_cnn": "4", "sfcn_like": "8", "monai_resnet": "layer3.0.conv2"}


def _x(shape=(2, 1, 16, 16, 16), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _close(ours, ref, rel=1e-5):
    ref = ref.to(ours.dtype)
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert scale > 0 and err <= rel * scale, f"max|diff| {err:.3g} vs max|ref| {scale:.3g}"


def _deeplift_cnn(kind):
    """Models on which Captum's DeepLift follows the chain rule (no two hooked modules in a row,
    non-overlapping pools, each module used once): ``pool`` has BatchNorm'd max pooling with a
    shifted reference (positive BN bias); ``act`` every non-linearity DeepLift rescales and a
    Softmax head."""
    torch.manual_seed(4)
    if kind == "act":
        return nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.ELU(), nn.Conv3d(4, 4, 3, padding=1), nn.Tanh(),
            nn.Conv3d(4, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv3d(4, 4, 3, padding=1), nn.Softplus(),
            nn.Conv3d(4, 4, 3, padding=1), nn.Sigmoid(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 3),
            nn.Softmax(dim=1)).double().eval()
    m = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.MaxPool3d(2), nn.Conv3d(4, 8, 3, padding=1), nn.ReLU(),
        nn.Conv3d(8, 8, 3, padding=1), nn.BatchNorm3d(8), nn.MaxPool3d(2), nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 2)).double()
    with torch.no_grad():
        for b in m.modules():
            if isinstance(b, nn.BatchNorm3d):
                b.running_mean.uniform_(-0.2, 0.2)
                b.running_var.uniform_(0.5, 1.5)
                b.bias.uniform_(-0.3, 0.5)
    return m.eval()


@pytest.mark.parametrize("kind", ["pool", "act"])
@pytest.mark.parametrize("baseline", ["zeros", "mean_image"])
def test_deeplift_matches_captum(kind, baseline):
    m = _deeplift_cnn(kind)
    x = _x(seed=3)
    t = torch.tensor([1, 0])
    # the study's two references: zero, and a mean image (here the mean of another batch)
    base = 0 if baseline == "zeros" else _x((4, 1, 16, 16, 16), seed=8).mean(0, keepdim=True)
    ours = attribute(m, x, t, "deeplift", baseline="zeros" if baseline == "zeros" else base)
    ref = captum_attr.DeepLift(m).attribute(x, baselines=base, target=t)
    _close(ours, ref, 1e-10)
    if kind == "pool":  # Softmax's centring breaks summation-to-delta (in Captum too)
        b = torch.zeros_like(x) if baseline == "zeros" else base.expand_as(x)
        delta = (m(x) - m(b)).gather(1, t.view(-1, 1))[:, 0]
        assert torch.allclose(ours.flatten(1).sum(1), delta.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["small_cnn", "sfcn_like"])
def test_deeplift_sums_to_delta_where_captums_hook_order_does_not(name):
    """ReLU → MaxPool (small_cnn) and MaxPool → ReLU (SFCN): Captum applies the first module's
    multiplier to the plain gradient (see deeplift's docstring), so its map misses f(x) − f(x')."""
    m, x, t = MODELS[name]().double(), _x(seed=3), torch.tensor([1, 0])
    base = torch.full_like(x, 0.3)
    delta = (m(x) - m(base)).gather(1, t.view(-1, 1))[:, 0].detach()
    ours = attribute(m, x, t, "deeplift", baseline=0.3)
    ref = captum_attr.DeepLift(m).attribute(x, baselines=0.3, target=t).detach()
    assert torch.allclose(ours.flatten(1).sum(1), delta, rtol=0, atol=1e-12)
    assert (ref.flatten(1).sum(1) - delta).abs().max() > 1e-3 * delta.abs().max()


def test_deeplift_sums_to_delta_with_a_reused_activation_and_overlapping_pools():
    """MONAI's ResNet calls one ReLU module twice per block and pools 3×3×3 with stride 2:
    each use gets its own multiplier and colliding max-pool winners accumulate, so the map
    still sums to f(x) − f(x')."""
    from monai.networks.nets import ResNet

    torch.manual_seed(1)
    m = ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(4, 8, 8, 8), spatial_dims=3,
               n_input_channels=1, num_classes=2, conv1_t_size=3, conv1_t_stride=1).double().eval()
    assert m.maxpool.kernel_size == 3 and m.maxpool.stride == 2
    x, t = _x(seed=4), torch.tensor([0, 1])
    base = torch.full_like(x, 0.3)
    ours = attribute(m, x, t, "deeplift", baseline=0.3)
    delta = (m(x) - m(base)).gather(1, t.view(-1, 1))[:, 0].detach()
    assert torch.allclose(ours.flatten(1).sum(1), delta, rtol=0, atol=1e-9)
    assert not torch.allclose(ours, attribute(m, x, t, "input_x_gradient"))  # it is not just x·∇f


def test_deeplift_of_a_linear_model_is_input_times_weight():
    m = linear_model((6, 6, 6)).double()
    x = _x((2, 1, 6, 6, 6))
    t = torch.tensor([0, 1])
    w = m[1].weight[t].view(2, 1, 6, 6, 6)
    assert torch.allclose(attribute(m, x, t, "deeplift"), x * w, rtol=0, atol=1e-13)
    assert torch.allclose(attribute(m, x, t, "deeplift", baseline=0.5), (x - 0.5) * w, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", list(MODELS))
def test_guided_backprop_and_guided_gradcam_match_captum(name):
    m, x, t = MODELS[name]().double(), _x(seed=5), torch.tensor([0, 1])
    _close(attribute(m, x, t, "guided_backprop"), captum_attr.GuidedBackprop(m).attribute(x, target=t), 1e-12)
    layer = CAM_LAYER[name]
    for mode in ("nearest", "trilinear"):
        ours = attribute(m, x, t, "guided_gradcam", layer=layer, interpolate=mode)
        ref = captum_attr.GuidedGradCam(m, dict(m.named_modules())[layer]).attribute(
            x, target=t, interpolate_mode=mode)
        _close(ours, ref, 1e-12)
    assert not torch.allclose(attribute(m, x, t, "guided_gradcam", layer=layer),
                              attribute(m, x, t, "gradcam", layer=layer, guided=True))


def _layer_act_grad(m, x, t, layer):
    """The definitions' inputs written out independently: activation A and ∂y_t/∂A of ``layer``."""
    mod = dict(m.named_modules())[layer]
    store = {}
    h = mod.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    try:
        out = m(x)
    finally:
        h.remove()
    y = out.gather(1, t.view(-1, 1)).sum()
    (g,) = torch.autograd.grad(y, store["a"])
    return store["a"].detach(), g


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("layer_kind", ["cam_layer", "block"])
def test_cams_match_their_definitions(name, layer_kind):
    m, x, t = MODELS[name]().double(), _x(seed=6), torch.tensor([1, 0])
    layer = CAM_LAYER[name] if layer_kind == "cam_layer" else {
        "small_cnn": "2", "sfcn_like": "3", "monai_resnet": "layer1"}[name]  # a ReLU / a whole block
    a, g = _layer_act_grad(m, x, t, layer)
    up = lambda c: F.interpolate(c, size=x.shape[2:], mode="trilinear", align_corners=False)  # noqa: E731
    # Draelos & Carin 2020, eq. 3: element-wise gradient × activation, summed over channels
    _close(attribute(m, x, t, "hirescam", layer=layer), up(F.relu((g * a).sum(1, keepdim=True))), 1e-12)
    # Jiang et al. 2021, eq. 5-6: positive gradients as voxel weights
    _close(attribute(m, x, t, "layercam", layer=layer), up(F.relu((F.relu(g) * a).sum(1, keepdim=True))), 1e-12)
    # Selvaraju et al. 2017 at any named layer (the study's GradCAM_l1..l3)
    w = g.mean(dim=(2, 3, 4), keepdim=True)
    _close(attribute(m, x, t, "gradcam", layer=layer, relu=False), up((w * a).sum(1, keepdim=True)), 1e-12)
    # Muhammad & Yeasin 2020: projection on the first principal component of the (voxels × channels)
    # activation matrix, via numpy's SVD in float64, sign fixed so that Σ v ≥ 0
    import numpy as np

    ref = []
    for i in range(2):
        mat = a[i].reshape(a.shape[1], -1).T.numpy()
        mat = mat - mat.mean(0)
        v = np.linalg.svd(mat, full_matrices=True)[2][0]
        v = v if v.sum() >= 0 else -v
        ref.append(torch.from_numpy(mat @ v).reshape(1, *a.shape[2:]))
    ref = up(F.relu(torch.stack(ref)))
    _close(attribute(m, x, t, "eigencam", layer=layer), ref, 1e-10)
    assert torch.equal(attribute(m, x, t, "eigencam", layer=layer),
                       attribute(m, x, torch.tensor([0, 0]), "eigencam", layer=layer))  # class-agnostic


def test_hirescam_equals_gradcam_when_the_gradient_is_uniform():
    """A global-average-pooled head after the CAM layer makes ∂y/∂A constant over voxels, where
    HiResCAM = Grad-CAM (Draelos & Carin 2020, §3.3); LayerCAM too when the weights are positive."""
    conv = nn.Conv3d(1, 3, 3, padding=1)
    lin = nn.Linear(3, 2)
    torch.manual_seed(2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.3, 2.0]]))
    m = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), lin).double().eval()
    x, t = _x((2, 1, 8, 8, 8)), torch.tensor([0, 1])
    gc = attribute(m, x, t, "gradcam", layer="1")
    _close(attribute(m, x, t, "hirescam", layer="1"), gc, 1e-12)
    _close(attribute(m, x, torch.tensor([0, 0]), "layercam", layer="1"),
           attribute(m, x, torch.tensor([0, 0]), "gradcam", layer="1"), 1e-12)


def test_nearest_interpolation_copies_layer_cells():
    m, x, t = small_cnn().double(), _x(seed=7), torch.tensor([0, 1])
    cam = attribute(m, x, t, "gradcam", layer="4", interpolate="nearest")  # 8³ layer grid → 16³
    blocks = cam.unfold(2, 2, 2).unfold(3, 2, 2).unfold(4, 2, 2)
    assert torch.equal(blocks.amax((-3, -2, -1)), blocks.amin((-3, -2, -1)))
    from neuroxai.errors import AttributionError

    with pytest.raises(AttributionError, match="interpolation"):
        attribute(m, x, t, "hirescam", interpolate="cubic")


def test_cams_match_pytorch_grad_cam_after_its_rescaling():
    """pytorch-grad-cam (the study's CAM library; not installed by default: it needs ttach and
    torchvision.transforms) min-max rescales each map in float32 and resizes it with scipy's zoom.
    At a full-resolution layer (zoom factor 1) its maps are min-max(ours) to float32 rounding;
    EigenCAM's up to the sign LAPACK gives each volume's singular vector."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m, x, t = small_cnn().double(), _x(seed=0), [1, 0]

    def mm(a):
        a = a - a.amin((1, 2, 3, 4), keepdim=True)
        return (a / (1e-7 + a.amax((1, 2, 3, 4), keepdim=True)))[:, 0]

    for name, cls in [("gradcam", pgc.GradCAM), ("hirescam", pgc.HiResCAM), ("layercam", pgc.LayerCAM),
                      ("eigencam", pgc.EigenCAM)]:
        with cls(model=m, target_layers=[m[2]]) as cam:
            ref = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in t])).double()
        ours = attribute(m, x, torch.tensor(t), name, layer="2")
        for i in range(2):
            err = (mm(ours[i:i + 1]) - ref[i:i + 1]).abs().max()
            if name == "eigencam":
                err = min(err, (mm(F.relu(-first_component(m[:3](x[i:i + 1]).detach()))) - ref[i:i + 1]).abs().max())
            assert err <= 1e-4, (name, i, float(err))
