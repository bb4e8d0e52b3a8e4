"""Bring your own model: TorchScript, package.module:Class + weights + kwargs, checkpoints; shape checks."""
from __future__ import annotations

import textwrap

import pytest
import torch

from neuroxai.errors import CheckpointError, ModelError
from neuroxai.models import MODELS, save_checkpoint
from neuroxai.models.byo import check_input_shape, load_user_model

X = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))


def _model():
    torch.manual_seed(0)
    return MODELS["small_cnn"](channels=(4, 8)).eval()


def test_torchscript_scripted_and_traced(tmp_path):
    m = _model()
    torch.jit.save(torch.jit.script(m), tmp_path / "scripted.ts")
    torch.jit.save(torch.jit.trace(m, X), tmp_path / "traced.pt")
    for name in ("scripted.ts", "traced.pt"):
        back = load_user_model(str(tmp_path / name), input_shape=(1, 1, 16, 16, 16))
        assert torch.allclose(back(X), m(X), atol=1e-6), name


NET = textwrap.dedent("""
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self, width=4, n_classes=2):
            super().__init__()
            self.conv = nn.Conv3d(1, width, 3, padding=1)
            self.head = nn.Linear(width, n_classes)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)).mean((2, 3, 4)))
""")


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg_byo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("userpkg_byo.nets")


def test_module_class_with_kwargs_and_ddp_wrapped_weights(tmp_path, user_pkg):
    torch.manual_seed(3)
    ref = user_pkg.TinyNet(width=6, n_classes=3).eval()
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}  # saved from DDP, in a wrapper dict
    torch.save({"state_dict": sd, "epoch": torch.tensor(9)}, tmp_path / "w.pt")
    (tmp_path / "kw.yaml").write_text("width: 6\nn_classes: 3\n")
    m = load_user_model("userpkg_byo.nets:TinyNet", state_dict=tmp_path / "w.pt", kwargs_yaml=tmp_path / "kw.yaml",
                        input_shape=(1, 1, 12, 12, 12))
    assert torch.equal(m(X), ref(X)) and not m.training
    # wrong constructor args: the weights do not fit, and the error says so
    (tmp_path / "kw4.yaml").write_text("width: 4\nn_classes: 3\n")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_user_model("userpkg_byo.nets:TinyNet", state_dict=tmp_path / "w.pt", kwargs_yaml=tmp_path / "kw4.yaml")
    with pytest.raises(ModelError, match="TinyNett"):
        load_user_model("userpkg_byo.nets:TinyNett")
    with pytest.raises(ModelError, match="cannot import"):
        load_user_model("no_such_pkg_xyz.nets:TinyNet")


def test_checkpoint_and_registry_name(tmp_path):
    m = _model()
    p = save_checkpoint(tmp_path / "m.pt", m, {"architecture": "small_cnn", "config": {"channels": [4, 8]}})
    assert torch.equal(load_user_model(str(p))(X), m(X))
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    back = load_user_model("small_cnn", state_dict=tmp_path / "sd.pt", kwargs_yaml={"channels": [4, 8]})
    assert torch.equal(back(X), m(X))
    with pytest.raises(ModelError, match="not found"):
        load_user_model(str(tmp_path / "nothing_here.pt"))
    with pytest.raises(ModelError, match="cannot tell"):
        load_user_model("not_a_model_name")


def test_torch_export_archive(tmp_path):
    m = _model()
    ep = torch.export.export(m, (X,), dynamic_shapes=({0: torch.export.Dim("batch", max=64)},))
    torch.export.save(ep, tmp_path / "m.pt2")
    back = load_user_model(str(tmp_path / "m.pt2"), input_shape=(1, 1, 16, 16, 16))
    assert torch.allclose(back(X), m(X), atol=1e-6)


def test_shape_mismatch_says_expected_and_found():
    m = MODELS["sfcn"](channels=(4, 8, 8, 8, 8, 4)).eval()  # 5 max-pools: needs ≥ 32 voxels a side
    assert check_input_shape(m, (1, 1, 32, 32, 32)) == (1, 2)
    with pytest.raises(ModelError) as e:
        check_input_shape(m, (1, 2, 32, 32, 32))  # two channels, the model takes one
    msg = str(e.value)
    assert "(B, 1, D, H, W)" in msg and "(1, 2, 32, 32, 32)" in msg and "channels" in msg  # torch's own text
    with pytest.raises(ModelError, match="too small|Output size") as e:
        check_input_shape(m, (1, 1, 16, 16, 16))
    assert "(1, 1, 16, 16, 16)" in str(e.value)
    assert m.training is False

    class NoBatch(torch.nn.Module):
        def forward(self, x):
            return x.mean()

    with pytest.raises(ModelError, match=r"\(B, n_outputs\)"):
        check_input_shape(NoBatch(), (1, 1, 8, 8, 8))
