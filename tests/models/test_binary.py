"""Single-logit binary models (BCEWithLogitsLoss style): every method explains z for class 1 and
−z for class 0, exactly as on the equivalent two-logit model ``[−z, z]``; evaluation uses
sigmoid(z)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from neuroxai.attribution import attribute
from neuroxai.errors import ModelError
from neuroxai.models.binary import SingleLogitBinary, adapt_classifier
from neuroxai.models.byo import check_input_shape
from neuroxai.models.train import evaluate, predict


def _net(n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(2), nn.Flatten(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, n_out))


@pytest.fixture(scope="module")
def pair():
    """A single-logit model and the two-logit model with head [−w, w], [−b, b] (the same net)."""
    torch.manual_seed(0)
    one = _net(1).double().eval()
    two = _net(2).double().eval()
    two.load_state_dict({k: v for k, v in one.state_dict().items() if not k.startswith("8.")}, strict=False)
    with torch.no_grad():
        two[8].weight.copy_(torch.cat([-one[8].weight, one[8].weight]))
        two[8].bias.copy_(torch.cat([-one[8].bias, one[8].bias]))
    x = torch.randn(3, 1, 8, 8, 8, dtype=torch.float64)
    return one, two, x


METHODS = {"gradient": {}, "input_x_gradient": {}, "smoothgrad": {"n_samples": 4, "sigma": 0.2, "seed": 0},
           "integrated_gradients": {"steps": 8}, "occlusion": {"patch": 4, "stride": 4},
           "gradcam": {"layer": "2"}, "gradcam_pp": {"layer": "2"}, "lrp": {},
           "lrp_epsilon": {"composite": "epsilon"}}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_explains_z_and_minus_z(pair, name):
    one, two, x = pair
    wrapped = SingleLogitBinary(one)
    method = "lrp" if name.startswith("lrp") else name
    params = dict(METHODS[name])
    if "layer" in params:  # the wrapper's paths carry the prefix `model.`
        wrapped_params = {**params, "layer": f"model.{params['layer']}"}
    else:
        wrapped_params = params
    for cls in (0, 1):
        t = torch.full((3,), cls)
        got = attribute(wrapped, x, t, method, **wrapped_params)
        ref = attribute(two, x, t, method, **params)
        torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-9 * float(ref.abs().max()))
    if method in ("gradient", "smoothgrad", "integrated_gradients", "occlusion", "lrp", "input_x_gradient"):
        # linear in the explained output: class 0's map is class 1's negated
        a1 = attribute(wrapped, x, torch.ones(3, dtype=torch.long), method, **wrapped_params)
        a0 = attribute(wrapped, x, torch.zeros(3, dtype=torch.long), method, **wrapped_params)
        torch.testing.assert_close(a0, -a1, rtol=1e-7, atol=1e-9 * float(a1.abs().max()))
    if method == "lrp":  # class 1 is the single output itself, as the regression path explains it
        torch.testing.assert_close(attribute(wrapped, x, torch.ones(3, dtype=torch.long), "lrp", **params),
                                   attribute(one, x, None, "lrp", **params), rtol=1e-5, atol=1e-8)


class _Flat(nn.Module):  # returns (B,) like many BCE classifiers
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[:, 0]


def test_shapes_accepted_and_wrapped_for_binary_tasks_only(pair):
    one, two = (copy.deepcopy(m).float() for m in pair[:2])
    flat = _Flat(one).eval()
    assert check_input_shape(flat, (2, 1, 8, 8, 8)) == (2,)
    assert check_input_shape(one, (2, 1, 8, 8, 8)) == (2, 1)
    assert isinstance(adapt_classifier(flat, (1,), "classification", 2), SingleLogitBinary)
    assert adapt_classifier(two, (1, 2), "classification", 2) is two
    assert adapt_classifier(one, (1, 1), "regression", 1) is one
    with pytest.raises(ModelError, match="binary"):
        adapt_classifier(one, (1, 1), "classification", 3)


class _DS(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": torch.tensor(int(self.y[i]))}


def test_evaluation_uses_sigmoid_of_the_logit(pair):
    one = copy.deepcopy(pair[0]).float()
    torch.manual_seed(1)
    x = torch.randn(12, 1, 8, 8, 8)
    with torch.no_grad():
        z = one(x)[:, 0]
    y = (z > z.median()).long()
    wrapped = SingleLogitBinary(_Flat(one))
    probs, labels = predict(wrapped, _DS(x, y), "classification")
    np.testing.assert_allclose(probs[:, 1], torch.sigmoid(z).numpy(), rtol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    ev = evaluate(wrapped, _DS(x, y), "classification", n_boot=100)
    assert ev["auroc"] == 1.0  # the labels are the logit's order
    assert ev["accuracy"] == pytest.approx(float(((z > 0).long() == y).float().mean()))
