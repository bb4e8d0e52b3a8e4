"""``run.target``: which output the maps explain (the true class, the predicted class or class 1),
validated at load, keyed into the stages, and recorded per subject in the score table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from neuroxai.errors import ConfigError, RunError
from neuroxai.protocol.runner import run_protocol
from neuroxai.protocol.schema import load_protocol
from neuroxai.protocol.stages.tasks import explained


def _protocol(tiny, tmp_path, target: str | None, name: str):
    spec = yaml.safe_load(tiny.read_text())
    spec["tasks"][0]["null_control"] = False
    spec["methods"] = [{"name": "gradient"}, {"name": "random", "params": {"seed": 0}}]
    spec["sanity"] = {"model_randomization": {"enabled": False}}
    spec["validity"] = {"enabled": False}
    if target is not None:
        spec["run"]["target"] = target
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_bad_target_is_refused_at_load(tiny_protocol, tmp_path):
    with pytest.raises(ConfigError) as e:
        load_protocol(_protocol(tiny_protocol, tmp_path, "signal", "bad"))
    assert "run.target" in str(e.value) and "positive" in str(e.value)
    assert load_protocol(_protocol(tiny_protocol, tmp_path, None, "default")).run.target == "label"


class _Task:
    kind, subject_ids, labels = "classification", ["a", "b", "c"], np.array([1, 0, 1])


def test_explained_targets_per_mode():
    pred = np.array([0, 0, 1])
    t, rec = explained(_Task(), ["c", "b", "a"], pred, "label", "cpu")
    assert t.tolist() == [1, 0, 1] and rec["label"].tolist() == [1, 0, 1]
    assert rec["prediction"].tolist() == [0, 0, 1]
    t, _ = explained(_Task(), ["c", "b", "a"], pred, "predicted", "cpu")
    assert t.tolist() == [0, 0, 1]
    t, rec = explained(_Task(), ["c", "b", "a"], pred, "positive", "cpu")
    assert t.tolist() == [1, 1, 1] and rec["target"].tolist() == [1, 1, 1]


def test_target_option_changes_label0_maps_only_and_is_recorded(tiny_protocol, tmp_path):
    out = tmp_path / "run"
    lab = run_protocol(load_protocol(_protocol(tiny_protocol, tmp_path, "label", "lab")), out, report=False)
    a = lab.results.score_table().frame()  # the next run in this folder replaces scores.parquet
    n_attr = len(list(out.glob("stages/attribute/*/DONE")))
    pos = run_protocol(load_protocol(_protocol(tiny_protocol, tmp_path, "positive", "pos")), out, report=False)
    # new attribute stages for the new target (a resume never mixes targets); the model is reused
    assert len(list(out.glob("stages/attribute/*/DONE"))) == 2 * n_attr
    assert len(list(out.glob("stages/train/*/DONE"))) == 1
    b = pos.results.score_table().frame()
    with pytest.raises(RunError, match="changed since"):  # never read as the first run's
        lab.results.score_table().frame()
    for df in (a, b):
        assert {"label", "prediction", "target"} <= set(df.columns)
        assert set(df["label"]) == {0, 1} and set(df["prediction"]) <= {0, 1}
    assert (a["target"] == a["label"]).all() and (b["target"] == 1).all()
    key = ["subject_id", "method", "metric"]
    m = a.merge(b, on=key, suffixes=("_lab", "_pos"))
    g = m[(m.method == "gradient") & (m.metric == "relevance_mass_accuracy")]
    assert (g.prediction_lab == g.prediction_pos).all()
    one, zero = g[g.label_lab == 1], g[g.label_lab == 0]
    assert len(one) and len(zero)
    np.testing.assert_array_equal(one.value_lab, one.value_pos)  # the same logit explained
    assert not np.allclose(zero.value_lab, zero.value_pos)  # class 0's logit vs class 1's
