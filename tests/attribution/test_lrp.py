"""LRP: analytic cases, conservation, canonization, model safety and errors (float64, CPU)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from neuroxai.attribution.base import attribute
from neuroxai.attribution.lrp import Sum, canonize, lrp, lrp_conservation
from neuroxai.errors import ConfigError, UnsupportedLayerError

from ._models import linear_model, monai_resnet, sfcn_like, small_cnn

DT = torch.float64


def _x(shape=(2, 1, 16, 16, 16), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _randomize_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


# ------------------------------------------------------------------------------ analytic
def test_linear_model_epsilon_equals_input_times_gradient():
    model = linear_model().double()
    x, t = _x((2, 1, 6, 6, 6)), torch.tensor([0, 1])
    attr = lrp(model, x, t, rules={"Linear": "epsilon"}, epsilon=1e-12)
    w = model[1].weight.detach()
    ixg = x * w[t].reshape(2, 1, 6, 6, 6)
    assert torch.allclose(attr, ixg, rtol=1e-9, atol=1e-12)
    logits = model(x)[torch.arange(2), t]
    assert torch.allclose(attr.sum((1, 2, 3, 4)), logits - model[1].bias[t], rtol=1e-9)


def test_one_hot_start_is_logit_start_divided_by_logit():
    model, x, t = small_cnn().double(), _x(), torch.tensor([1, 0])
    a_logit = lrp(model, x, t)
    a_one = lrp(model, x, t, start="one_hot")
    logits = model(x)[torch.arange(2), t].detach()
    assert torch.allclose(a_logit, a_one * logits.reshape(2, 1, 1, 1, 1), rtol=1e-10, atol=1e-14)


def _bias_free_cnn():
    model = small_cnn(bn=False).double()
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    return model


def test_epsilon_conserves_relevance_on_bias_free_model():
    model, x, t = _bias_free_cnn(), _x(), torch.tensor([0, 1])
    attr, cons = lrp(model, x, t, composite="epsilon", epsilon=1e-12, stabilizer=1e-12,
                     return_conservation=True)
    logits = model(x)[torch.arange(2), t].detach()
    assert torch.allclose(cons.start, logits, rtol=1e-12)
    assert torch.allclose(cons.total, attr.sum((1, 2, 3, 4)))
    assert (cons.relative_error <= 1e-6).all(), cons.relative_error
    # the helper reports the same numbers
    c2 = lrp_conservation(model, x, t, composite="epsilon", epsilon=1e-12, stabilizer=1e-12)
    assert torch.allclose(c2.total, cons.total)


def test_biases_break_conservation_by_the_absorbed_amount():
    """With biases the sum misses the logit (the report must be able to show it)."""
    model, x, t = small_cnn(bn=False).double(), _x(), torch.tensor([0, 1])
    cons = lrp_conservation(model, x, t, composite="epsilon", epsilon=1e-12, stabilizer=1e-12)
    assert (cons.relative_error > 1e-3).any()


def test_monai_resnet_conserves_through_residual_sums():
    """Bias-free MONAI ResNet (BN as exact identity): ε everywhere conserves the logit, which
    fails if the residual sum copied relevance to both branches instead of splitting it."""
    model = monai_resnet().double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.eps = 0.0  # mean 0, var 1, weight 1, bias 0: identity
            if isinstance(m, (nn.Conv3d, nn.Linear)) and m.bias is not None:
                m.bias.zero_()
    x, t = _x(seed=3), torch.tensor([0, 1])
    cons = lrp_conservation(model, x, t, composite="epsilon", epsilon=1e-12, stabilizer=1e-12)
    assert (cons.relative_error <= 1e-6).all(), cons.relative_error


class _TinyResidual(nn.Module):
    """``out = v · (x + relu(W x))``: a residual block small enough to compute by hand."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.lin = nn.Linear(3, 3, bias=False)
        self.act = nn.ReLU()
        self.sum = Sum()
        self.head = nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.5, 1.0, 1.0], [-1.0, 0.5, 2.0]]))
            self.head.weight.copy_(torch.tensor([[1.0, 2.0, -0.5]]))

    def forward(self, x):
        x = self.flatten(x)
        return self.head(self.sum(x, self.act(self.lin(x))))


def test_residual_sum_hand_computed():
    model = _TinyResidual().double()
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=DT).reshape(1, 1, 1, 1, 3)
    attr = lrp(model, x, None, composite="epsilon", epsilon=0.0, stabilizer=0.0).reshape(3)
    # by hand: z = Wx = [-1.5, 5.5, 6]; h = relu(z) = [0, 5.5, 6]; s = x + h = [1, 7.5, 9]
    # out = 1 + 15 - 4.5 = 11.5; R_s = v ⊙ s = [1, 15, -4.5] (sums to 11.5)
    # sum rule: R_x(direct) = x / s ⊙ R_s = [1, 4, -1.5]; R_h = h / s ⊙ R_s = [0, 11, -3]
    # ε rule (ε = 0): R_x(via W) = x ⊙ Wᵀ(R_h / z), R_h / z = [0, 2, -0.5]
    #   Wᵀ[0, 2, -0.5] = [1.5, 1.75, 1.0] → x ⊙ · = [1.5, 3.5, 3.0]
    expected = torch.tensor([1.0 + 1.5, 4.0 + 3.5, -1.5 + 3.0], dtype=DT)
    assert torch.allclose(attr, expected, rtol=1e-12)
    assert attr.sum().item() == pytest.approx(11.5, rel=1e-12)


def test_maxpool_is_winner_take_all():
    model = nn.Sequential(nn.MaxPool3d(2), nn.Flatten(), nn.Linear(1, 1, bias=False)).double().eval()
    with torch.no_grad():
        model[2].weight.fill_(2.0)
    x = torch.zeros(1, 1, 2, 2, 2, dtype=DT)
    x[0, 0, 1, 0, 1] = 3.0
    x[0, 0, 0, 0, 0] = 1.0
    attr = lrp(model, x, None, composite="epsilon")
    expected = torch.zeros_like(x)
    expected[0, 0, 1, 0, 1] = 6.0  # the logit 2·3 goes to the maximum only
    assert torch.allclose(attr, expected, rtol=1e-5)


def test_flat_first_layer_ignores_the_input_values():
    model, t = small_cnn().double(), torch.tensor([0, 0])
    x = _x()
    a = lrp(model, x, t, rules={"first": "flat", "Conv3d": "epsilon", "Linear": "epsilon"}, start="one_hot")
    # flat spreads each first-layer relevance uniformly over its 3×3×3 window: an input voxel's
    # relevance equals Σ over windows covering it of R/(window size); check one interior voxel by
    # recomputing from the first layer's output relevance.
    work = canonize(model)
    from neuroxai.attribution.lrp import bind_rules, make_composite
    bind_rules(work, make_composite(rules={"first": "flat", "Conv3d": "epsilon", "Linear": "epsilon"}))
    xin = x.clone().requires_grad_(True)
    z1 = work[0](xin)
    z1.retain_grad()
    out = work[1:](z1)
    sel = torch.zeros_like(out)
    sel[:, 0] = 1
    out.backward(sel)
    r1 = z1.grad.sum(1)  # relevance arriving at conv1's output, summed over channels
    d, h, w = 8, 8, 8
    expected = r1[:, d - 1:d + 2, h - 1:h + 2, w - 1:w + 2].sum((1, 2, 3)) / (27 * (1 + 1e-6 / 27))
    assert torch.allclose(a[:, 0, d, h, w], expected, rtol=1e-9)


# ----------------------------------------------------------------------------- canonization
@pytest.mark.parametrize("make_model", [small_cnn, sfcn_like, lambda: _randomize_bn(monai_resnet())],
                         ids=["small_cnn", "sfcn_like", "monai_resnet"])
def test_batchnorm_merge_is_exact_and_removes_batchnorm(make_model):
    model = make_model().double()
    x = _x()
    work = canonize(model)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in work.modules())
    assert (work(x) - model(x)).abs().max() <= 1e-10 * model(x).abs().max()


def test_unmerged_batchnorm_passes_relevance_like_zennit_without_canonizer():
    model, x, t = small_cnn().double(), _x(), torch.tensor([0, 1])
    a_merged = lrp(model, x, t)
    a_raw = lrp(model, x, t, canonize=False)
    assert a_raw.shape == a_merged.shape
    assert not torch.allclose(a_raw, a_merged)


# ------------------------------------------------------------------------------ safety
def _hooks(model):
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_backward_pre_hooks", {}))
        n += "forward" in m.__dict__
    return n


def _global_hooks():
    from torch.nn.modules import module as mm
    return sum(len(getattr(mm, name, {})) for name in ("_global_forward_hooks", "_global_forward_pre_hooks",
                                                        "_global_backward_hooks", "_global_backward_pre_hooks"))


@pytest.mark.parametrize("make_model", [small_cnn, lambda: _randomize_bn(monai_resnet())],
                         ids=["small_cnn", "monai_resnet"])
def test_user_model_unchanged_and_no_hooks_left(make_model):
    model = make_model().double()
    before = copy.deepcopy(model.state_dict())
    grads = [p.requires_grad for p in model.parameters()]
    out_before = model(_x())
    g0 = _global_hooks()
    for composite in ("epsilon_plus_flat", "epsilon_gamma_box"):
        lrp(model, _x(), torch.tensor([0, 1]), composite=composite)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == grads
    assert _hooks(model) == 0 and _global_hooks() == g0
    assert any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    assert torch.equal(model(_x()), out_before)


def test_no_hooks_left_after_an_exception():
    model = small_cnn().double()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(Exception, match="out of range"):
        lrp(model, _x(), torch.tensor([0, 7]))  # fails after the forward pass
    with pytest.raises(ConfigError):
        lrp(model, _x(), torch.tensor([0, 1]), rules={"Conv3d": "no_such_rule"})
    assert _hooks(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # and the next call is unaffected
    assert torch.equal(lrp(model, _x(), torch.tensor([0, 1])), lrp(copy.deepcopy(model), _x(), torch.tensor([0, 1])))


# ------------------------------------------------------------------------------ errors
def test_unsupported_activation_names_the_layer():
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Sigmoid(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 1, 5, 5, 5))
    with pytest.raises(UnsupportedLayerError, match=r"'1' of type Sigmoid"):
        lrp(model.eval(), torch.randn(2, 1, 5, 5, 5), torch.tensor([0, 1]))


def test_unsupported_parametric_layer_names_the_path():
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Sequential(nn.GroupNorm(1, 2), nn.ReLU()), nn.Flatten(),
                          nn.Linear(54, 2)).eval()
    with pytest.raises(UnsupportedLayerError) as err:
        lrp(model, torch.randn(2, 1, 5, 5, 5), torch.tensor([0, 1]))
    assert "'1.0'" in str(err.value) and "GroupNorm" in str(err.value)


class _FunctionalResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.flat = nn.Flatten()

    def forward(self, x):
        return self.flat(self.pool(x + self.conv(x)))


class _FunctionalSigmoid(_FunctionalResidual):
    def forward(self, x):
        return self.flat(self.pool(torch.sigmoid(self.conv(x))))


def test_unhandled_residual_addition_and_functional_nonlinearity_are_rejected():
    x = torch.randn(2, 1, 4, 4, 4)
    with pytest.raises(UnsupportedLayerError, match="combines two branches"):
        lrp(_FunctionalResidual().eval(), x, None, composite="epsilon")
    with pytest.raises(UnsupportedLayerError, match="sigmoid"):
        lrp(_FunctionalSigmoid().eval(), x, None, composite="epsilon")


def test_rules_mapping_errors_name_the_key():
    model, x, t = small_cnn().double(), _x(), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match="no_such_layer"):
        lrp(model, x, t, rules={"Conv3d": "zplus", "Linear": "epsilon", "no_such_layer": "flat"})
    with pytest.raises(UnsupportedLayerError, match="'10' of type Linear"):
        lrp(model, x, t, rules={"Conv3d": "zplus"})  # the Linear head has no rule
    with pytest.raises(ConfigError, match="start"):
        lrp(model, x, t, start="probability")


# --------------------------------------------------------------------------------- API
def test_rules_mapping_equals_named_composite_and_path_keys_override():
    model, x, t = sfcn_like().double(), _x(), torch.tensor([0, 1])
    a = lrp(model, x, t, composite="epsilon_plus_flat")
    b = lrp(model, x, t, rules={"Conv3d": "zplus", "Linear": "epsilon", "first": "flat"})
    assert torch.equal(a, b)
    c = lrp(model, x, t, rules={"0": "wsquare", "Conv3d": "zplus"})
    assert not torch.allclose(a, c)


def test_a_rule_with_its_own_parameters_equals_the_shared_parameter():
    """``{rule: gamma, gamma: 0.5}`` in ``rules`` is the γ rule with γ = 0.5: the same map as the
    shared ``gamma=0.5`` (whose maps equal Zennit's, test_lrp_reference), and not the default γ."""
    model, x, t = small_cnn().double(), _x(), torch.tensor([0, 1])
    own = lrp(model, x, t, rules={"Conv3d": {"rule": "gamma", "gamma": 0.5}, "Linear": "epsilon"})
    shared = lrp(model, x, t, rules={"Conv3d": "gamma", "Linear": "epsilon"}, gamma=0.5)
    assert torch.equal(own, shared)
    assert not torch.allclose(own, lrp(model, x, t, rules={"Conv3d": "gamma", "Linear": "epsilon"}))
    # a rule's own parameter wins over the shared one; the shared one still reaches the other rules
    mixed = lrp(model, x, t, rules={"Conv3d": {"rule": "gamma", "gamma": 0.5}, "Linear": "epsilon"}, gamma=2.0)
    assert torch.equal(mixed, own)


def test_a_rule_parameter_the_rule_does_not_have_is_refused_with_the_rule_and_its_parameters():
    from neuroxai.attribution.lrp import RULES, make_composite, make_rule

    model, x, t = small_cnn().double(), _x(), torch.tensor([0, 1])
    with pytest.raises(ConfigError) as e:
        lrp(model, x, t, rules={"Conv3d": {"rule": "gamma", "gama": 0.5}, "Linear": "epsilon"})
    msg = str(e.value)
    assert "rules.Conv3d" in msg and "'gama'" in msg and "LRP rule 'gamma'" in msg and "'stabilizer'" in msg
    with pytest.raises(ConfigError, match="'zplus'"):  # z⁺ has no γ: refused, not silently dropped
        make_rule({"rule": "zplus", "gamma": 0.5})
    with pytest.raises(ConfigError, match="unknown LRP parameter"):
        make_composite("epsilon_plus", gama=0.5)
    # a rule's parameters are its fields, and it is built directly from them
    assert RULES.params("alpha2_beta1") == ("stabilizer",) and RULES.params("zbox") == ("stabilizer", "low", "high")
    assert RULES["gamma"](gamma=0.5, stabilizer=1e-3) == make_rule({"rule": "gamma", "gamma": 0.5}, stabilizer=1e-3)


def test_attribute_api_float32_and_float64():
    model = sfcn_like()
    x64 = _x()
    a64 = attribute(model.double(), x64, [0, 1], "lrp")
    a32 = attribute(model.float(), x64.float(), 1, "lrp", composite="epsilon_plus")
    assert a64.dtype == torch.float64 and a64.shape == (2, 1, 16, 16, 16)
    assert a32.dtype == torch.float32 and a32.shape == (2, 1, 16, 16, 16)
    ref = attribute(model.double(), x64, 1, "lrp", composite="epsilon_plus")
    assert ((a32.double() - ref).abs().max() / ref.abs().max()) < 1e-4


def test_regression_output_target_none():
    model, x = sfcn_like(n_out=1).double(), _x()
    attr, cons = lrp(model, x, None, return_conservation=True)
    assert attr.shape == x.shape
    assert torch.allclose(cons.start, model(x).reshape(-1).detach())
    with pytest.raises(Exception, match="single regression output"):
        lrp(sfcn_like(n_out=2).double(), x, None)


def test_runs_under_no_grad_and_inference_mode():
    model, x, t = small_cnn().double(), _x(), torch.tensor([0, 1])
    ref = lrp(model, x, t)
    with torch.no_grad():
        assert torch.equal(lrp(model, x, t), ref)
    with torch.inference_mode():
        xi = x.clone()
        out = lrp(model, xi, t)
    assert torch.equal(out, ref)
