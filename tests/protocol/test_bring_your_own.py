"""Re-evaluating a prior pipeline: a model given as a TorchScript file gives the same scores as the
run that trained it; a model that does not fit the data fails with both shapes named."""
from __future__ import annotations

import pytest
import torch

from neuroxai.errors import ModelError
from neuroxai.models import load_checkpoint
from neuroxai.protocol.runner import run_protocol
from neuroxai.protocol.schema import load_protocol


def test_torchscript_model_reproduces_the_trained_run(tiny_protocol, tmp_path):
    first = run_protocol(load_protocol(tiny_protocol), tmp_path / "a", report=False, stop_after=None)
    ckpt = next((tmp_path / "a").glob("stages/train/*/model.pt"))
    for c in (tmp_path / "a").glob("stages/train/*/model.pt"):  # the base task's model (not the null one)
        if load_checkpoint(c)[1]["task"] == "hippo":
            ckpt = c
    model, _ = load_checkpoint(ckpt)
    ts = tmp_path / "prior_study.ts"
    torch.jit.save(torch.jit.script(model), ts)
    again = run_protocol(load_protocol(tiny_protocol), tmp_path / "b", report=False, checkpoint=str(ts))
    pick = lambda r: [(m.method, m.metrics) for m in r.results.methods  # noqa: E731
                      if m.method in ("gradient", "smoothgrad")]
    assert pick(again) == pick(first)  # incl. comparisons with the null model, trained in both runs
    assert again.results.task("hippo").model.auroc == first.results.task("hippo").model.auroc


def test_model_expecting_other_input_is_a_clear_error(tiny_protocol, tmp_path):
    wrong = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2))
    ts = tmp_path / "wrong.ts"
    torch.jit.save(torch.jit.script(wrong), ts)
    with pytest.raises(ModelError, match="3"):
        run_protocol(load_protocol(tiny_protocol), tmp_path / "c", report=False, checkpoint=str(ts))
