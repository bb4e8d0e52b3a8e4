"""Checkpoints: round trip, weights_only refusal of pickles (no code runs), clear errors, atomic writes."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from neuroxai.errors import CheckpointError
from neuroxai.models import MODELS, load_checkpoint, save_checkpoint
from neuroxai.models.checkpoint import read_checkpoint

CONFIG = {"in_channels": 1, "n_outputs": 2, "channels": (4, 8)}


def _model():
    torch.manual_seed(0)
    m = MODELS["small_cnn"](**CONFIG)
    with torch.no_grad():  # non-trivial BN buffers must survive too
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    return m.eval()


def test_roundtrip_outputs_and_metadata(tmp_path):
    m = _model()
    meta = {"architecture": "small_cnn", "config": CONFIG, "task": "region_volume",
            "metrics": {"auroc": np.float64(0.93)}, "manifest_hash": "abc", "seed": 7}
    p = save_checkpoint(tmp_path / "sub" / "m.pt", m, meta)
    back, got = load_checkpoint(p)
    x = torch.randn(2, 1, 16, 16, 16)
    assert torch.equal(back(x), m(x)) and not back.training
    assert got["task"] == "region_volume" and got["metrics"]["auroc"] == 0.93 and got["seed"] == 7
    assert got["architecture"] == "small_cnn" and got["config"]["channels"] == [4, 8]
    assert got["versions"]["torch"] == torch.__version__ and got["versions"]["python"]
    raw = torch.load(p, weights_only=True)  # the file itself is weights-only loadable
    assert set(raw) == {"format", "state_dict", "architecture", "config", "meta", "versions"}
    assert [f.name for f in p.parent.iterdir()] == ["m.pt"]  # no temp file left


class _Evil:
    def __reduce__(self):
        import os

        return (os.mkdir, (str(_Evil.target),))


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    torch.save(_model(), tmp_path / "module.pt")  # a whole nn.Module needs pickle
    with pytest.raises(CheckpointError, match="weights_only=True") as e:
        load_checkpoint(tmp_path / "module.pt")
    msg = str(e.value)
    assert "module.pt" in msg and "save_checkpoint" in msg and "state_dict" in msg  # how to convert
    _Evil.target = tmp_path / "pwned"
    torch.save({"state_dict": {}, "x": _Evil()}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Evil(), f)
    for name in ("evil.pt", "evil.pkl"):
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / name)
    assert not (tmp_path / "pwned").exists()


def test_missing_bare_and_mismatched_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as e:
        load_checkpoint(tmp_path / "none.pt")
    assert "none.pt" in str(e.value)
    torch.save(_model().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="bare state_dict") as e:
        load_checkpoint(tmp_path / "bare.pt")
    assert "load_user_model" in str(e.value)
    p = save_checkpoint(tmp_path / "m.pt", _model(), {"architecture": "small_cnn",
                                                        "config": {**CONFIG, "channels": (4, 16)}})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="architecture"):
        save_checkpoint(tmp_path / "x.pt", _model(), {"config": CONFIG})
    with pytest.raises(CheckpointError, match="plain data"):
        save_checkpoint(tmp_path / "x.pt", _model(), {"architecture": "small_cnn", "config": CONFIG,
                                                       "task": object()})


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "m.pt", _model(), {"architecture": "small_cnn", "config": CONFIG, "seed": 1})
    before = p.read_bytes()
    real = torch.save

    def crash(obj, f, *a, **k):
        real({"partial": torch.zeros(3)}, f)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(p, _model(), {"architecture": "small_cnn", "config": CONFIG, "seed": 2})
    assert p.read_bytes() == before and read_checkpoint(p)["meta"]["seed"] == 1
    assert [f.name for f in tmp_path.iterdir()] == ["m.pt"]
