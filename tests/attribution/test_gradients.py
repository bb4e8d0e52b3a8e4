"""Gradient, Input×Gradient and Integrated Gradients: analytic answers on a linear model,
completeness, chunking invariance, parameter errors, and an untouched model."""
from __future__ import annotations

import copy

import pytest
import torch

from neuroxai.attribution import METHODS, attribute
from neuroxai.errors import AttributionError

from ._models import linear_model, monai_resnet, small_cnn


def _x(shape=(2, 1, 16, 16, 16), seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_linear_gradient_is_the_weight_row_and_ixg_sums_to_logit_minus_bias():
    m = linear_model((6, 6, 6)).double()
    x = _x((3, 1, 6, 6, 6))
    t = torch.tensor([0, 1, 0])
    g = attribute(m, x, t, "gradient")
    w, b = m[1].weight, m[1].bias
    assert g.shape == x.shape and g.dtype == torch.float64
    assert torch.equal(g.flatten(1), w[t])
    assert torch.equal(attribute(m, x, t, "gradient", abs=True), g.abs())
    ixg = attribute(m, x, t, "input_x_gradient")
    logit = m(x).gather(1, t.view(-1, 1))[:, 0]
    assert torch.allclose(ixg.flatten(1).sum(1), logit - b[t], rtol=0, atol=1e-12)


def test_regression_target_none_uses_the_single_output():
    m = linear_model((4, 4, 4), n_out=1).double()
    x = _x((2, 1, 4, 4, 4))
    g = attribute(m, x, None, "gradient")
    assert torch.equal(g.flatten(1), m[1].weight.expand(2, -1))
    with pytest.raises(AttributionError, match="single output"):
        attribute(linear_model((4, 4, 4)).double(), x, None, "gradient")


def test_float32_is_preserved():
    m = small_cnn()
    x = _x(dtype=torch.float32)
    for name in ("gradient", "input_x_gradient"):
        assert attribute(m, x, 1, name).dtype == torch.float32


@pytest.mark.parametrize("baseline", ["zeros", 0.5, "mean", "blurred"])
def test_ig_is_exactly_complete_on_a_linear_model(baseline):
    m = linear_model((6, 6, 6)).double()
    x = _x((2, 1, 6, 6, 6))
    t = torch.tensor([1, 0])
    attr, err = attribute(m, x, t, "integrated_gradients", steps=3, baseline=baseline, return_completeness=True)
    assert err.shape == (2,) and err.abs().max() < 1e-12
    # the gradient is constant, so IG = (x − x') ⊙ w whatever the quadrature
    from neuroxai.attribution.gradients import ig_baseline
    ref = (x - ig_baseline(x, baseline)) * m[1].weight[t].view(2, 1, 6, 6, 6)
    assert torch.allclose(attr, ref, rtol=0, atol=1e-12)


def test_ig_completeness_error_shrinks_with_steps_on_a_cnn():
    m = small_cnn().double()
    x = _x((2, 1, 12, 12, 12))
    t = torch.tensor([0, 1])
    f = m(x).gather(1, t.view(-1, 1))[:, 0] - m(torch.zeros_like(x)).gather(1, t.view(-1, 1))[:, 0]
    _, e4 = attribute(m, x, t, "integrated_gradients", steps=4, return_completeness=True)
    attr, e64 = attribute(m, x, t, "integrated_gradients", steps=64, return_completeness=True)
    assert torch.allclose(e64, attr.flatten(1).sum(1) - f, atol=1e-12)  # the reported error is the real one
    assert e64.abs().max() < 0.02 * f.abs().max()
    assert e64.abs().max() < e4.abs().max()


def test_ig_does_not_depend_on_the_step_chunking():
    m = small_cnn().double()
    x = _x((2, 1, 12, 12, 12))
    t = torch.tensor([1, 1])
    a = attribute(m, x, t, "integrated_gradients", steps=7, batch_steps=1)
    b = attribute(m, x, t, "integrated_gradients", steps=7, batch_steps=3)
    c = attribute(m, x, t, "integrated_gradients", steps=7)
    assert torch.allclose(a, b, rtol=0, atol=1e-13) and torch.allclose(a, c, rtol=0, atol=1e-13)


def test_ig_counts_chunked_passes():
    m = small_cnn().double()
    calls = []
    h = m.register_forward_pre_hook(lambda mod, inp: calls.append(inp[0].shape[0]))
    try:
        attribute(m, _x((2, 1, 8, 8, 8)), 0, "integrated_gradients", steps=10, batch_steps=4)
    finally:
        h.remove()
    assert calls == [8, 8, 4, 2, 2]  # 3 chunked gradient passes, then f(x) and f(x')


def test_bad_params_raise_attribution_errors():
    m = small_cnn().double()
    x = _x((1, 1, 8, 8, 8))
    with pytest.raises(AttributionError, match="unknown parameter.*'step'"):
        attribute(m, x, 0, "integrated_gradients", step=4)
    with pytest.raises(AttributionError, match="baseline"):
        attribute(m, x, 0, "integrated_gradients", baseline="noise")
    with pytest.raises(AttributionError, match="quadrature"):
        attribute(m, x, 0, "integrated_gradients", rule="simpson")
    with pytest.raises(AttributionError, match="unknown parameter"):
        attribute(m, x, 0, "gradient", sigma=0.1)
    with pytest.raises(AttributionError, match="3-D"):
        attribute(m, x[0], 0, "gradient")


NON_LRP = [("gradient", {}), ("input_x_gradient", {}), ("integrated_gradients", {"steps": 2}),
           ("smoothgrad", {"n_samples": 2}), ("occlusion", {"patch": 8, "stride": 8}), ("gradcam", {}),
           ("gradcam", {"guided": True}), ("gradcam_pp", {}), ("random", {}), ("edge_detector", {})]


def test_every_method_leaves_the_model_untouched():
    m = monai_resnet().double()
    state = copy.deepcopy(m.state_dict())
    flags = [(type(mod), getattr(mod, "inplace", None), mod.training) for mod in m.modules()]
    req = [p.requires_grad for p in m.parameters()]
    x = _x((2, 1, 16, 16, 16))
    for method, kw in NON_LRP:
        out = attribute(m, x, torch.tensor([0, 1]), method, **kw)
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all(), method
        assert all(torch.equal(state[k], v) for k, v in m.state_dict().items()), method
        assert not any(mod._forward_hooks or mod._forward_pre_hooks or mod._backward_hooks
                       or mod._backward_pre_hooks for mod in m.modules()), method
        assert all(p.grad is None for p in m.parameters()), method
        assert [(type(mod), getattr(mod, "inplace", None), mod.training) for mod in m.modules()] == flags, method
        assert [p.requires_grad for p in m.parameters()] == req, method
    assert {name for name, _ in NON_LRP} <= set(METHODS)
