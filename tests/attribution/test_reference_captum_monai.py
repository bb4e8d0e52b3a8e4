"""Reference equivalence in float64: our maps vs Captum and MONAI on the same models and inputs.

Criterion (issue 5): max |ours − ref| ≤ 1e-5 × max |ref| (most agree to ~1e-12).
MONAI's CAMs are compared before postprocessing (``postprocessing=identity``) *and* after its
default normalizer, which maps each volume's (min, max) to (1, 0): MONAI = 1 − minmax(ours).
"""
from __future__ import annotations

import pytest
import torch

from neuroxai.attribution import attribute

from ._models import monai_resnet, sfcn_like, small_cnn

captum_attr = pytest.importorskip("captum.attr")
monai_vis = pytest.importorskip("monai.visualize")

MODELS = {"small_cnn": small_cnn, "sfcn_like": sfcn_like, "monai_resnet": monai_resnet}
CAM_LAYER = {"small_cnn": "4", "sfcn_like": "8", "monai_resnet": "layer3.0.conv2"}


def _x(shape=(2, 1, 16, 16, 16), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(ours, ref, rel=1e-5):
    ref = ref.to(ours.dtype)
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert scale > 0 and err <= rel * scale, f"max|diff| {err:.3g} vs max|ref| {scale:.3g}"


def _minmax(a):
    lo = a.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
    hi = a.flatten(1).amax(1).view(-1, 1, 1, 1, 1)
    return (a - lo) / (hi - lo)


@pytest.fixture(params=list(MODELS))
def case(request):
    return request.param, MODELS[request.param]().double(), _x(seed=len(request.param)), torch.tensor([1, 0])


def test_gradient_and_input_x_gradient_match_captum(case):
    _, m, x, t = case
    _close(attribute(m, x, t, "gradient"), captum_attr.Saliency(m).attribute(x, target=t, abs=False), 1e-12)
    _close(attribute(m, x, t, "input_x_gradient"), captum_attr.InputXGradient(m).attribute(x, target=t), 1e-12)


@pytest.mark.parametrize("rule,baseline", [("gausslegendre", "zeros"), ("riemann_trapezoid", 0.3)])
def test_integrated_gradients_matches_captum(case, rule, baseline):
    _, m, x, t = case
    ours, err = attribute(m, x, t, "integrated_gradients", steps=8, rule=rule, baseline=baseline,
                          return_completeness=True)
    ref, delta = captum_attr.IntegratedGradients(m).attribute(
        x, baselines=float(baseline) if baseline != "zeros" else None, target=t, n_steps=8, method=rule,
        return_convergence_delta=True)
    if rule == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n (ends halved) on linspace(0, 1, n): they sum to
        # (n − 1)/n, not 1. Ours are the true trapezoid rule (1/(n − 1)), so Captum = ours·(n − 1)/n
        # and only ours is complete for a linear path.
        ref = ref * 8 / 7
    # Captum builds its quadrature weights with torch.tensor(list) → float32: ~1e-8 relative
    _close(ours, ref, 1e-6)
    if rule == "gausslegendre":
        assert torch.allclose(err, delta.to(err.dtype), atol=1e-6 * float(ref.abs().max()))


def test_integrated_gradients_is_exactly_captums_with_its_float32_weights(monkeypatch):
    from neuroxai.attribution import gradients

    m = small_cnn().double()
    x = _x(seed=9)
    t = torch.tensor([0, 1])
    nodes = gradients.ig_nodes
    monkeypatch.setattr(gradients, "ig_nodes",
                        lambda *a: (nodes(*a)[0], nodes(*a)[1].float().double()))
    ours = attribute(m, x, t, "integrated_gradients", steps=8, batch_steps=3)
    ref = captum_attr.IntegratedGradients(m).attribute(x, target=t, n_steps=8)
    _close(ours, ref, 1e-13)


@pytest.mark.parametrize("nt_type,kw", [("smoothgrad", {}), ("smoothgrad_sq", {"squared": True}),
                                        ("vargrad", {"vargrad": True})])
def test_smoothgrad_matches_captum_noise_tunnel_with_the_same_noise(monkeypatch, nt_type, kw):
    m = small_cnn().double()
    x = _x((2, 1, 12, 12, 12), seed=5) * torch.tensor([1.0, 3.0], dtype=torch.float64).view(2, 1, 1, 1, 1)
    t = torch.tensor([0, 1])
    n, sigma, seed = 4, 0.2, 11
    ours = attribute(m, x, t, "smoothgrad", n_samples=n, sigma=sigma, seed=seed, **kw)
    # our noise, replayed as documented: sample i = i-th randn(x.shape) × sigma·range per volume
    gen = torch.Generator().manual_seed(seed)
    sd = sigma * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(2, 1, 1, 1, 1)
    eps = torch.stack([torch.randn(x.shape, generator=gen, dtype=x.dtype) * sd for _ in range(n)])
    # Captum repeats each volume n times (repeat_interleave: volume-major) and adds torch.normal noise
    captum_order = eps.transpose(0, 1).reshape(n * 2, *x.shape[1:])
    monkeypatch.setattr(torch, "normal", lambda mean, std, *a, **k: captum_order.clone())
    nt = captum_attr.NoiseTunnel(captum_attr.Saliency(m))
    ref = nt.attribute(x, nt_type=nt_type, nt_samples=n, stdevs=1.0, target=t, abs=False)
    _close(ours, ref, 1e-10)


@pytest.mark.parametrize("name", ["small_cnn", "monai_resnet"])
def test_occlusion_matches_captum(name):
    m = MODELS[name]().double()
    x = _x((2, 1, 12, 12, 12), seed=2)
    t = torch.tensor([1, 0])
    ours = attribute(m, x, t, "occlusion", patch=(4, 3, 5), stride=(3, 2, 4), baseline=-0.2, batch_patches=16)
    ref = captum_attr.Occlusion(m).attribute(x, sliding_window_shapes=(1, 4, 3, 5), strides=(1, 3, 2, 4),
                                             target=t, baselines=-0.2)
    assert ref.dtype == torch.float32  # Captum accumulates occlusion maps in float32
    _close(ours, ref, 1e-6)


def test_gradcam_matches_captum_layer_gradcam(case):
    name, m, x, t = case
    layer = CAM_LAYER[name]
    ours = attribute(m, x, t, "gradcam", layer=layer)
    lgc = captum_attr.LayerGradCam(m, dict(m.named_modules())[layer]).attribute(x, target=t, relu_attributions=True)
    _close(ours, captum_attr.LayerAttribution.interpolate(lgc, x.shape[2:], "trilinear"), 1e-12)


def test_guided_gradcam_matches_captum(case):
    name, m, x, t = case
    layer = CAM_LAYER[name]
    ours = attribute(m, x, t, "gradcam", layer=layer, guided=True)
    ref = captum_attr.GuidedGradCam(m, dict(m.named_modules())[layer]).attribute(x, target=t,
                                                                                interpolate_mode="trilinear")
    _close(ours, ref, 1e-12)


def test_gradcam_and_gradcam_pp_match_monai(case):
    name, m, x, t = case
    layer = CAM_LAYER[name]
    ident = lambda a: a  # noqa: E731
    t1 = torch.tensor([1, 1])  # MONAI takes one class index for the whole batch
    ours = attribute(m, x, t1, "gradcam", layer=layer)
    _close(ours, monai_vis.GradCAM(nn_module=m, target_layers=layer, postprocessing=ident)(x, class_idx=1), 1e-12)
    normalized = monai_vis.GradCAM(nn_module=m, target_layers=layer)(x, class_idx=1)
    assert torch.allclose(1 - _minmax(ours), normalized.double(), atol=1e-6)  # MONAI normalizes in float32
    # MONAI's GradCAM++ broadcasts its (B,) score correctly only for batch 1
    for i in range(2):
        pp = attribute(m, x[i:i + 1], t1[:1], "gradcam_pp", layer=layer)
        ref = monai_vis.GradCAMpp(nn_module=m, target_layers=layer, postprocessing=ident)(x[i:i + 1], class_idx=1)
        _close(pp, ref, 1e-12)


def test_occlusion_with_shifted_border_windows_matches_monai_occlusion_sensitivity():
    m = sfcn_like().double()
    x = _x((1, 1, 11, 12, 13), seed=4)
    # mask 4, overlap 0.5 → scan interval 2; MONAI's last window ends at the border (border="shift")
    occ = monai_vis.OcclusionSensitivity(m, mask_size=4, n_batch=64, mode=-0.3, overlap=0.5, activate=False,
                                           verbose=False)
    mon, _ = occ(x)  # (1, n_classes, D, H, W): the occluded output, averaged over covering windows
    fx = m(x).detach()
    for c in range(2):
        ours = attribute(m, x, c, "occlusion", patch=4, stride=2, baseline=-0.3, border="shift")
        _close(ours, fx[0, c] - mon[:, c:c + 1].as_tensor(), 1e-6)  # MONAI's map is float32
    clipped = attribute(m, x, 0, "occlusion", patch=4, stride=2, baseline=-0.3)
    assert not torch.allclose(clipped, fx[0, 0] - mon[:, :1].as_tensor().double())  # odd sizes: the border rule matters
