"""Training is seeded and resumable; checkpoints load weights only; randomization copies."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from neuroxai.errors import CheckpointError, ConfigError
from neuroxai.models import MODELS, TrainConfig, evaluate, load_checkpoint, save_checkpoint, train_model
from neuroxai.models.randomize import cascading_randomization, independent_randomization, weight_layers


class Toy(torch.utils.data.Dataset):
    """Label = whether a bright cube sits in the left or right half (learnable in a few epochs)."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, 12, 12, 12, generator=g) * 0.3
        self.y = torch.arange(n) % 2
        for i in range(n):
            if self.y[i] == 1:
                self.x[i, 0, 2:5, 3:7, 3:7] += 2.0
            else:
                self.x[i, 0, 7:10, 3:7, 3:7] += 2.0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


def _model():
    torch.manual_seed(0)
    return MODELS["small_cnn"](n_outputs=2, channels=(4, 8))


def test_same_seed_same_weights_and_it_learns():
    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.01, seed=3)
    a = train_model(_model(), Toy(32, 0), Toy(8, 1), cfg).model
    b = train_model(_model(), Toy(32, 0), Toy(8, 1), cfg).model
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k
    perf = evaluate(a, Toy(40, 2), "classification", n_boot=200)
    assert perf["auroc"] > 0.95 and not perf["at_chance"]


def test_model_at_chance_is_flagged():
    torch.manual_seed(0)
    model = MODELS["small_cnn"](n_outputs=2, channels=(4, 8)).eval()
    with torch.no_grad():
        model[-1].weight.zero_()
        model[-1].bias.zero_()
    perf = evaluate(model, Toy(40, 2), "classification", n_boot=200)
    assert perf["auroc"] == 0.5 and perf["at_chance"]


def test_unknown_training_key_is_named():
    with pytest.raises(ConfigError, match="epoch"):
        TrainConfig(epoch=3)


CHILD = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[3])
    from test_training import Toy, _model
    from neuroxai.models import TrainConfig, train_model
    import time
    cfg = TrainConfig(epochs=6, batch_size=8, lr=0.01, seed=3)
    def slow(epoch, n, **kw):
        time.sleep(0.5)
    train_model(_model(), Toy(32, 0), Toy(8, 1), cfg, checkpoint_path=sys.argv[1], progress=slow)
""")


def test_killed_training_resumes_to_identical_weights(tmp_path):
    ck = tmp_path / "last.pt"
    here = os.path.dirname(__file__)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ck), "x", here])
    deadline = time.time() + 120
    while time.time() < deadline and not ck.exists():
        time.sleep(0.05)
    time.sleep(0.6)  # at least one more epoch, not all six
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    epoch = torch.load(ck, weights_only=True)["epoch"]
    assert 1 <= epoch < 6
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the child: identical kernels, identical rounding
    try:
        cfg = TrainConfig(epochs=6, batch_size=8, lr=0.01, seed=3)
        resumed = train_model(_model(), Toy(32, 0), Toy(8, 1), cfg, checkpoint_path=ck).model
        full = train_model(_model(), Toy(32, 0), Toy(8, 1), cfg).model
    finally:
        torch.set_num_threads(threads)
    for (k, v), (_, w) in zip(resumed.state_dict().items(), full.state_dict().items()):
        assert torch.equal(v, w), k


def test_checkpoint_roundtrip_and_pickle_refusal(tmp_path):
    m = _model().eval()
    p = save_checkpoint(tmp_path / "m.pt", m, {"architecture": "small_cnn",
                                               "config": {"n_outputs": 2, "channels": (4, 8)}, "task": "t"})
    back, meta = load_checkpoint(p)
    x = torch.randn(2, 1, 12, 12, 12)
    assert torch.equal(back(x), m(x)) and meta["task"] == "t" and meta["versions"]["torch"]
    torch.save(m, tmp_path / "pickled.pt")  # a whole nn.Module: needs pickle
    with pytest.raises(CheckpointError, match="weights_only=False"):
        load_checkpoint(tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_randomization_goes_top_down_on_copies():
    m = _model().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    layers = weight_layers(m)
    steps = list(cascading_randomization(m, seed=0))
    assert [n for n, _ in steps] == layers[::-1]
    last_name, last = steps[0]
    assert not torch.equal(dict(last.named_modules())[last_name].weight, dict(m.named_modules())[last_name].weight)
    # cascading: after step k, the k top layers differ and the rest are untouched
    k = 3
    name_k, mk = steps[k - 1]
    for n in layers:
        same = torch.equal(dict(mk.named_modules())[n].weight, dict(m.named_modules())[n].weight)
        assert same == (n not in layers[-k:]), n
    for n, mi in independent_randomization(m, seed=0):
        diff = [l for l in layers if not torch.equal(dict(mi.named_modules())[l].weight, dict(m.named_modules())[l].weight)]
        assert diff == [n]
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("arch,shape", [("sfcn", 32), ("small_cnn", 24), ("resnet", 24), ("densenet121", 32)])
def test_architectures_output_logits(arch, shape):
    torch.manual_seed(0)
    kw = {"channels": (4, 4, 8, 8, 8, 4)} if arch == "sfcn" else {}
    m = MODELS[arch](in_channels=1, n_outputs=3, **kw).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, shape, shape, shape)).shape == (2, 3)
