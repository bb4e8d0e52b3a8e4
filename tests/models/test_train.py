"""Training: seeded, learns, early-stops to the best weights, resumes after SIGKILL bit-exactly;
evaluation numbers against analytic cases and scikit-learn."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from neuroxai.errors import CheckpointError, ConfigError
from neuroxai.models import MODELS, TrainConfig, evaluate, train_model


class Toy(torch.utils.data.Dataset):
    """16³ noise; label 1 = a bright cube in the upper half along D, 0 = in the lower half.
    ``random_labels`` shuffles the labels (nothing to learn). ``regression``: label = cube
    brightness."""

    def __init__(self, n, seed, random_labels=False, regression=False):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, 16, 16, 16, generator=g) * 0.3
        self.y = torch.arange(n) % 2
        amp = 1.0 + torch.rand(n, generator=g) * 2
        for i in range(n):
            d0 = 2 if (self.y[i] == 1 or regression) else 10
            self.x[i, 0, d0:d0 + 4, 5:10, 5:10] += amp[i]
        if regression:
            self.y = amp
        elif random_labels:
            self.y = self.y[torch.randperm(n, generator=g)]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


def make_model(seed=0, n_outputs=2):
    torch.manual_seed(seed)
    return MODELS["small_cnn"](n_outputs=n_outputs, channels=(4, 8))


def weights(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


CFG = dict(epochs=4, batch_size=8, lr=0.01, seed=3, early_stopping=0)


def test_same_seed_same_weights_other_seed_other_weights_and_it_learns():
    model = make_model()
    rng_before = torch.get_rng_state()
    a = train_model(model, Toy(32, 0), Toy(8, 1), TrainConfig(**CFG))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is left alone
    b = train_model(make_model(), Toy(32, 0), Toy(8, 1), TrainConfig(**CFG))
    c = train_model(make_model(), Toy(32, 0), Toy(8, 1), TrainConfig(**{**CFG, "seed": 4}))
    assert same(weights(a.model), weights(b.model))
    assert not same(weights(a.model), weights(c.model))  # the seed really drives the run
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]
    perf = evaluate(a.model, Toy(40, 2), "classification", n_boot=200)
    assert perf["auroc"] >= 0.95 and perf["auroc_ci_low"] > 0.5 and not perf["at_chance"]


def test_random_labels_train_to_chance():
    res = train_model(make_model(), Toy(32, 0, random_labels=True), Toy(8, 1, random_labels=True),
                      TrainConfig(**CFG))
    perf = evaluate(res.model, Toy(40, 2, random_labels=True), "classification", n_boot=500)
    assert perf["auroc_ci_low"] < 0.5 < perf["auroc_ci_high"] and perf["at_chance"]


def test_early_stopping_keeps_the_best_epoch_weights():
    snaps = {}
    model = make_model()

    def grab(epoch, n, **kw):
        snaps[epoch] = (weights(model), kw["val_loss"])

    class Flipped(Toy):  # validation labels inverted: val loss rises as the model learns
        def __getitem__(self, i):
            return {"image": self.x[i], "label": 1 - self.y[i]}

    cfg = TrainConfig(**{**CFG, "epochs": 8, "early_stopping": 2})
    res = train_model(model, Toy(32, 0), Flipped(8, 1), cfg, progress=grab)
    losses = [h["val_loss"] for h in res.history]
    assert len(res.history) < 8  # stopped early
    assert res.best_epoch == int(np.argmin(losses)) + 1
    assert len(res.history) == res.best_epoch + 2  # patience 2
    assert same(weights(res.model), snaps[res.best_epoch][0])
    assert not same(weights(res.model), snaps[len(res.history)][0])


def test_regression_learns_amplitude():
    res = train_model(make_model(n_outputs=1), Toy(48, 0, regression=True), Toy(8, 1, regression=True),
                      TrainConfig(kind="regression", **{**CFG, "epochs": 15}))
    perf = evaluate(res.model, Toy(40, 2, regression=True), "regression", n_boot=200)
    assert perf["r2"] > 0.5 and not perf["at_chance"] and perf["mae"] < 0.4


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="epoch") as e:
        TrainConfig(epoch=3)
    assert "batch_size" in str(e.value)  # lists the allowed keys
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="step")
    assert TrainConfig().early_stopping == 5 and TrainConfig().amp == "auto"


# ---- kill and resume -------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from test_train import CFG, Toy, make_model
    from neuroxai.models import TrainConfig, train_model
    def die(epoch, n, **kw):
        if epoch == 2:  # the epoch-2 checkpoint is on disk: die as hard as a power cut
            os.kill(os.getpid(), signal.SIGKILL)
    train_model(make_model(), Toy(32, 0), Toy(8, 1), TrainConfig(**{**CFG, "early_stopping": 3}),
                checkpoint_path=sys.argv[1], progress=die)
""")


def test_killed_training_resumes_to_identical_weights(tmp_path):
    ck = tmp_path / "last.pt"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ck), os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    state = torch.load(ck, weights_only=True)
    assert state["epoch"] == 2 and not list(tmp_path.glob("*.tmp"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the child: identical kernels, identical rounding
    try:
        cfg = TrainConfig(**{**CFG, "early_stopping": 3})
        seen = []
        resumed = train_model(make_model(seed=99), Toy(32, 0), Toy(8, 1), cfg, checkpoint_path=ck,
                              progress=lambda e, n, **k: seen.append(e))
        full = train_model(make_model(), Toy(32, 0), Toy(8, 1), cfg)
    finally:
        torch.set_num_threads(threads)
    assert seen == [3, 4]  # only the missing epochs ran
    assert same(weights(resumed.model), weights(full.model))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    # a finished run resumes to the same result without training again
    again = train_model(make_model(seed=5), Toy(32, 0), Toy(8, 1), cfg, checkpoint_path=ck,
                        progress=lambda *a, **k: pytest.fail("trained again"))
    assert same(weights(again.model), weights(full.model))
    # a checkpoint from other parameters is refused, not silently mixed in
    with pytest.raises(CheckpointError, match="lr"):
        train_model(make_model(), Toy(32, 0), Toy(8, 1), TrainConfig(**{**CFG, "early_stopping": 3, "lr": 0.1}),
                    checkpoint_path=ck)


# ---- evaluate --------------------------------------------------------------------------------
class Scores(torch.utils.data.Dataset):
    """image = a constant volume whose value is the score; label given."""

    def __init__(self, scores, labels):
        self.s = torch.as_tensor(scores, dtype=torch.float32)
        self.y = torch.as_tensor(labels)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": torch.full((1, 4, 4, 4), float(self.s[i])), "label": self.y[i]}


class ScoreModel(nn.Module):
    """Logits (0, mean(x)): class-1 probability is monotone in the score; regression: mean(x)."""

    def __init__(self, n_out=2):
        super().__init__()
        self.n_out = n_out

    def forward(self, x):
        s = x.mean((1, 2, 3, 4))
        return torch.stack([torch.zeros_like(s), s], 1) if self.n_out == 2 else s[:, None]


def test_evaluate_perfect_and_chance_classifiers():
    lab = np.arange(30) % 2
    perfect = evaluate(ScoreModel(), Scores(lab * 2.0 - 1 + np.linspace(0, 0.1, 30), lab), "classification")
    assert perfect["auroc"] == 1.0 and perfect["auroc_ci_low"] == 1.0 and perfect["accuracy"] == 1.0
    assert perfect["balanced_accuracy"] == 1.0 and perfect["n_test"] == 30 and not perfect["at_chance"]
    chance = evaluate(ScoreModel(), Scores(np.zeros(30), lab), "classification")
    assert chance["auroc"] == 0.5 and chance["at_chance"] and chance["balanced_accuracy"] == 0.5
    few = evaluate(ScoreModel(), Scores([1.0, -1.0, 1.0], [1, 0, 1]), "classification")
    assert few["at_chance"] and few["auroc"] is None
    import json

    json.dumps(perfect), json.dumps(few)  # plain types only


def test_evaluate_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 2, 50)
    s = np.round(rng.normal(size=50) + lab, 1)  # rounded: ties
    res = evaluate(ScoreModel(), Scores(s, lab), "classification", n_boot=300)
    p1 = torch.softmax(torch.stack([torch.zeros(50), torch.tensor(s, dtype=torch.float32)], 1), 1)[:, 1].numpy()
    assert res["auroc"] == pytest.approx(roc_auc_score(lab, p1), abs=1e-12)
    assert res["auroc_ci_low"] < res["auroc"] < res["auroc_ci_high"]


def test_evaluate_regression():
    y = np.linspace(0, 10, 20)
    perfect = evaluate(ScoreModel(1), Scores(y, torch.tensor(y, dtype=torch.float32)), "regression")
    assert perfect["r2"] == pytest.approx(1.0) and perfect["mae"] == pytest.approx(0.0, abs=1e-5)
    assert not perfect["at_chance"]
    mean_only = evaluate(ScoreModel(1), Scores(np.full(20, 5.0), torch.tensor(y, dtype=torch.float32)), "regression")
    assert mean_only["r2"] == pytest.approx(0.0, abs=1e-6) and mean_only["at_chance"]
    assert mean_only["mae"] == pytest.approx(np.abs(y - 5).mean(), rel=1e-6)


def test_augmentation_is_a_zero_filled_translation():
    from neuroxai.models.train import _shift

    x = torch.zeros(4, 1, 8, 8, 8)
    x[:, 0, 4, 4, 4] = 1.0
    y = _shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.all(y.sum((1, 2, 3, 4)) == 1)  # the point moved, nothing wrapped
    pos = torch.stack([torch.nonzero(v[0])[0] for v in y])
    assert torch.all((pos - 4).abs() <= 2) and len({tuple(p.tolist()) for p in pos}) > 1
    cfg = TrainConfig(**{**CFG, "augment": True, "epochs": 2})
    a = train_model(make_model(), Toy(16, 0), Toy(8, 1), cfg).model
    b = train_model(make_model(), Toy(16, 0), Toy(8, 1), cfg).model
    plain = train_model(make_model(), Toy(16, 0), Toy(8, 1), TrainConfig(**{**CFG, "epochs": 2})).model
    assert same(weights(a), weights(b)) and not same(weights(a), weights(plain))
