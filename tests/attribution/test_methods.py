"""Gradient-family, CAM, occlusion and baseline methods: analytic answers and Captum/MONAI."""
from __future__ import annotations

import copy

import pytest
import torch

from neuroxai.attribution import attribute
from neuroxai.errors import AttributionError

from ._models import linear_model, monai_resnet, sfcn_like, small_cnn

torch.manual_seed(0)


def _x(shape=(2, 1, 16, 16, 16), seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_linear_model_gradient_and_input_x_gradient_are_exact():
    m = linear_model((6, 6, 6)).double()
    x = _x((3, 1, 6, 6, 6))
    t = torch.tensor([0, 1, 0])
    g = attribute(m, x, t, "gradient")
    w = m[1].weight
    for i in range(3):
        assert torch.allclose(g[i].flatten(), w[t[i]], atol=1e-12)
    ixg = attribute(m, x, t, "input_x_gradient")
    logits = m(x).gather(1, t.view(-1, 1))[:, 0]
    assert torch.allclose(ixg.flatten(1).sum(1), logits - m[1].bias[t], atol=1e-10)
    assert g.dtype == torch.float64


def test_integrated_gradients_matches_captum_and_is_complete():
    from captum.attr import IntegratedGradients

    m = small_cnn().double()
    x = _x()
    t = torch.tensor([1, 0])
    ours, delta = attribute(m, x, t, "integrated_gradients", steps=16, return_completeness=True)
    ref = IntegratedGradients(m).attribute(x, target=t, n_steps=16, method="gausslegendre")
    assert torch.allclose(ours, ref, atol=1e-10)
    # completeness on a linear model is exact
    lm = linear_model((6, 6, 6)).double()
    xl = _x((2, 1, 6, 6, 6))
    _, d = attribute(lm, xl, t, "integrated_gradients", steps=4, return_completeness=True)
    assert d.abs().max() < 1e-10


def test_smoothgrad_equals_mean_gradient_at_the_same_noise():
    m = small_cnn().double()
    x = _x()
    t = torch.tensor([0, 1])
    n, sigma = 6, 0.2
    ours = attribute(m, x, t, "smoothgrad", n_samples=n, sigma=sigma, seed=7, batch_samples=4)
    gen = torch.Generator().manual_seed(7)
    sd = sigma * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(2, 1, 1, 1, 1)
    noises = torch.cat([torch.randn((4, *x.shape), generator=gen, dtype=x.dtype),
                        torch.randn((2, *x.shape), generator=gen, dtype=x.dtype)])
    ref = sum(attribute(m, x + noises[k] * sd, t, "gradient") for k in range(n)) / n
    assert torch.allclose(ours, ref, atol=1e-12)
    again = attribute(m, x, t, "smoothgrad", n_samples=n, sigma=sigma, seed=7, batch_samples=4)
    assert torch.equal(ours, again)


def test_smoothgrad_variants_on_a_linear_model():
    m = linear_model((6, 6, 6)).double()
    x = _x((2, 1, 6, 6, 6))
    t = torch.tensor([0, 1])
    w2 = m[1].weight[t].view(2, 1, 6, 6, 6) ** 2
    assert attribute(m, x, t, "smoothgrad", n_samples=5, vargrad=True).abs().max() < 1e-12
    assert torch.allclose(attribute(m, x, t, "smoothgrad", n_samples=5, squared=True), w2)


def test_occlusion_matches_captum():
    from captum.attr import Occlusion

    m = small_cnn().double()
    x = _x((2, 1, 12, 12, 12))
    t = torch.tensor([1, 0])
    ours = attribute(m, x, t, "occlusion", patch=4, stride=3, batch_patches=7)
    ref = Occlusion(m).attribute(x, sliding_window_shapes=(1, 4, 4, 4), strides=(1, 3, 3, 3), target=t, baselines=0.0)
    assert ours.dtype == torch.float64
    assert torch.allclose(ours, ref.double(), rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def _minmax(a):
    lo = a.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
    hi = a.flatten(1).amax(1).view(-1, 1, 1, 1, 1)
    return (a - lo) / (hi - lo)


@pytest.mark.parametrize("factory,layer", [(small_cnn, "4"), (sfcn_like, "8"), (monai_resnet, "layer4.0.conv2")])
def test_gradcam_matches_monai_and_captum(factory, layer):
    from captum.attr import LayerAttribution, LayerGradCam
    from monai.visualize import GradCAM, GradCAMpp

    m = factory().double().eval()
    x = _x((2, 1, 16, 16, 16), seed=3)
    t = torch.tensor([1, 1])
    ours = attribute(m, x, t, "gradcam", layer=layer)
    if factory is not monai_resnet:  # MONAI's module backward hook differs on its own ResNet; Captum agrees
        mon = GradCAM(nn_module=m, target_layers=layer)(x, class_idx=1)
        # MONAI's default normalizer maps (min, max) to (1, 0) — flipped — in float32
        assert torch.allclose(1 - _minmax(ours), mon.double(), atol=1e-6)
    lgc = LayerGradCam(m, dict(m.named_modules())[layer]).attribute(x, target=t, relu_attributions=True)
    cap = LayerAttribution.interpolate(lgc, x.shape[2:], "trilinear")
    assert torch.allclose(ours, cap, atol=1e-10)
    if factory is not monai_resnet:  # MONAI's GradCAM++ only broadcasts its score for batch 1
        pp = attribute(m, x[:1], t[:1], "gradcam_pp", layer=layer)
        monpp = GradCAMpp(nn_module=m, target_layers=layer)(x[:1], class_idx=1)
        assert torch.allclose(1 - _minmax(pp), monpp.double(), atol=1e-6)
    batched = attribute(m, x, torch.tensor([1, 0]), "gradcam_pp", layer=layer)
    single = torch.cat([attribute(m, x[i:i + 1], torch.tensor([c]), "gradcam_pp", layer=layer)
                        for i, c in enumerate((1, 0))])
    assert torch.allclose(batched, single, atol=1e-12)


def test_gradcam_default_layer_and_bad_layer():
    m = small_cnn().double()
    x = _x()
    t = torch.tensor([0, 1])
    assert torch.equal(attribute(m, x, t, "gradcam"), attribute(m, x, t, "gradcam", layer="4"))
    with pytest.raises(AttributionError, match="'0'"):
        attribute(m, x, t, "gradcam", layer="nope")


def test_methods_leave_the_model_untouched():
    m = monai_resnet().double()
    ref = copy.deepcopy(m.state_dict())
    x = _x()
    t = torch.tensor([0, 1])
    for method, kw in [("gradient", {}), ("smoothgrad", {"n_samples": 2}), ("gradcam", {}), ("gradcam_pp", {}),
                       ("integrated_gradients", {"steps": 2}), ("lrp", {})]:
        attribute(m, x, t, method, **kw)
        assert all(torch.equal(ref[k], v) for k, v in m.state_dict().items()), method
        assert not any(mod._forward_hooks or mod._backward_hooks for mod in m.modules()), method
        assert all(p.grad is None for p in m.parameters()), method


def test_baselines_ignore_the_model():
    x = _x()
    a = attribute(small_cnn().double(), x, torch.tensor([0, 1]), "random", seed=3)
    b = attribute(sfcn_like().double(), x, torch.tensor([1, 0]), "random", seed=3)
    assert torch.equal(a, b) and not torch.equal(a, attribute(small_cnn(), x, 0, "random", seed=4))
    ramp = torch.arange(8, dtype=torch.float64).view(1, 1, 8, 1, 1).expand(1, 1, 8, 8, 8).contiguous()
    e = attribute(small_cnn().double(), ramp, 0, "edge_detector")
    # Sobel of a unit ramp along x: derivative 2 (central difference) × 16 (smoothing weights 4×4)
    assert torch.allclose(e[0, 0, 1:-1, 1:-1, 1:-1], torch.full((6, 6, 6), 32.0, dtype=torch.float64))
