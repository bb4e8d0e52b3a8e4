"""One metric under two scorings in one protocol (a metric entry's own ``scoring:`` and ``label``),
and DeepLift's ``baseline: train_mean`` as the attribute stage resolves it."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from neuroxai.attribution import attribute
from neuroxai.errors import AttributionError, ConfigError
from neuroxai.protocol.schema import Protocol, load_protocol
from neuroxai.protocol.stages.attribute import attribute_key, method_params, score_metrics, train_mean_image
from neuroxai.scoring import score

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "scoring" / "siegel2025_reference.json"

BASE = {
    "id": "t", "version": "1", "tasks": [{"id": "a", "type": "positive_control"}],
    "methods": [{"name": "gradient"}],
    "acceptance": [{"kind": "scaled_ci_above", "metric": "relevance_rank_accuracy"}],
}
#: the study's RMA and false-positive test under the preset, RMA and rank accuracy under ours
BOTH = {
    "metrics": [
        {"name": "relevance_mass_accuracy"},
        {"name": "false_positive", "params": {"gt_dilation": 3}},
        {"name": "relevance_mass_accuracy", "label": "rma_plain", "scoring": {"polarity": "absolute"}},
        {"name": "relevance_rank_accuracy", "scoring": {"polarity": "absolute"}},
    ],
    "scoring": {"preset": "siegel2025"},
}


def _proto(**over) -> Protocol:
    return Protocol.model_validate({**BASE, **BOTH, **over})


def _write(tmp_path, **over) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({**BASE, **BOTH, **over}, sort_keys=False))
    return p


def _study_reference():
    spec = importlib.util.spec_from_file_location("study_reference", ROOT / "benchmarks" / "study_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------------
# both scorings on the same maps
def test_one_run_scores_under_the_preset_and_under_ours():
    """On the study's reference maps: the preset entries equal the study's own functions'
    numbers (the fixture), the plain entry equals RMA of |map| written out in numpy and the
    direct ``score(polarity="absolute")``; the two RMAs differ (the preset's steps matter)."""
    mod = _study_reference()
    ref = json.loads(FIXTURE.read_text())
    cases = mod.make_cases()
    proto = _proto(metrics=[{"name": "relevance_mass_accuracy"},
                            {"name": "false_positive", "params": {"gt_dilation": mod.FP_DILATION}},
                            {"name": "relevance_mass_accuracy", "label": "rma_plain",
                             "scoring": {"polarity": "absolute"}},
                            {"name": "relevance_rank_accuracy", "scoring": {"polarity": "absolute"}}])
    pairs = mod.lateral_pairs(cases["names"])
    brain_np = cases["brain"]
    brain = torch.tensor(brain_np)[None, None]
    maps = torch.tensor(cases["maps"])[:, None]
    atl = torch.tensor(cases["atlases"])[:, None]
    got = {k: [] for k in ("rma", "fp", "plain", "plain_np", "rank", "rank_direct")}
    for i, groups in enumerate(cases["targets"]):
        labels = [lab for g in groups for lab in g]
        a, at = maps[i:i + 1], atl[i:i + 1]
        mask = torch.isin(at, torch.tensor(labels))
        s = score_metrics(a, mask, proto.metrics, proto.scoring, brain_mask=brain, atlas=at, true_region=labels,
                          lateral_pairs=pairs)
        assert {"relevance_mass_accuracy", "rma_plain", "rma_plain_chance", "rma_plain_norm", "false_positive",
                "relevance_rank_accuracy"} <= set(s)
        got["rma"].append(float(s["relevance_mass_accuracy"][0]))
        got["fp"].append(float(s["false_positive"][0]))
        got["plain"].append(float(s["rma_plain"][0]))
        got["rank"].append(float(s["relevance_rank_accuracy"][0]))
        direct = score(a, mask, ["relevance_rank_accuracy"], brain_mask=brain, polarity="absolute")
        got["rank_direct"].append(float(direct["relevance_rank_accuracy"][0]))
        m, inside = np.abs(cases["maps"][i].astype(np.float64)), mask[0, 0].numpy() & brain_np
        got["plain_np"].append(m[inside].sum() / m[brain_np].sum())
    np.testing.assert_allclose(got["rma"], ref["rma"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(got["fp"], ref["fp"], atol=0, rtol=0)
    np.testing.assert_allclose(got["plain"], got["plain_np"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(got["rank"], got["rank_direct"], atol=0, rtol=0)
    assert np.abs(np.subtract(got["rma"], got["plain"])).max() > 0.2


def test_each_map_is_preprocessed_once_per_distinct_scoring(monkeypatch):
    import neuroxai.scoring as scoring_pkg

    calls = []
    real = scoring_pkg.score

    def spy(*a, **k):
        calls.append(tuple(sorted(a[2])))
        return real(*a, **k)

    monkeypatch.setattr(scoring_pkg, "score", spy)
    proto = _proto()
    a = torch.randn(2, 1, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(a, dtype=torch.bool)
    mask[:, :, 3:6, 3:6, 3:6] = True
    s = score_metrics(a, mask, proto.metrics, proto.scoring)
    # the preset (RMA + false positives) in one call, ours (RMA + rank accuracy) in another
    assert sorted(calls) == [("false_positive", "relevance_mass_accuracy"),
                                          ("relevance_mass_accuracy", "relevance_rank_accuracy")]
    # the preset's RMA is the |map| cut at its 99th percentile: 1 % of the voxels keep relevance
    plain = score(a, mask, ["relevance_mass_accuracy"], polarity="absolute")["relevance_mass_accuracy"]
    assert torch.equal(s["rma_plain"], plain)
    assert not torch.allclose(s["relevance_mass_accuracy"], plain)


def test_the_same_metric_twice_under_one_scoring_is_two_calls():
    proto = _proto(metrics=[{"name": "top_k_intersection", "params": {"k": 0.01}},
                            {"name": "top_k_intersection", "label": "top_10", "params": {"k": 0.1}}],
                   acceptance=[{"kind": "scaled_ci_above", "metric": "top_10"}], scoring={})
    a = torch.arange(1000, dtype=torch.float32).view(1, 1, 10, 10, 10)
    mask = a >= 900  # the top 10 %
    s = score_metrics(a, mask, proto.metrics, proto.scoring)
    assert float(s["top_k_intersection"][0]) == 1.0 and float(s["top_10"][0]) == 1.0
    mask = a >= 950  # the top 5 %: all of the top 1 %, half of the top 10 %
    s = score_metrics(a, mask, proto.metrics, proto.scoring)
    assert float(s["top_k_intersection"][0]) == 1.0 and float(s["top_10"][0]) == 0.5


def test_labelled_extra_keys_take_the_label():
    proto = _proto(metrics=[{"name": "region_match", "label": "rm_plain", "scoring": {"polarity": "absolute"}}],
                   acceptance=[{"kind": "scaled_ci_above", "metric": "rm_plain"}])
    a = torch.zeros(1, 1, 8, 8, 8)
    a[..., :4, :, :] = 1.0
    atlas = torch.ones(1, 1, 8, 8, 8, dtype=torch.long)
    atlas[..., 4:, :, :] = 2
    s = score_metrics(a, atlas == 1, proto.metrics, proto.scoring, atlas=atlas, true_region=[1], lateral_pairs={})
    assert sorted(k for k in s if not k.endswith(("_chance", "_norm"))) == ["rm_plain", "rm_plain_weak"]
    assert float(s["rm_plain"][0]) == 1.0


# ----------------------------------------------------------------------------------------------
# checked at load
def test_bad_key_in_a_metrics_scoring_is_named_at_load(tmp_path):
    metrics = [*BOTH["metrics"][:3], {"name": "relevance_rank_accuracy", "scoring": {"polarty": "absolute"}}]
    with pytest.raises(ConfigError) as e:
        load_protocol(_write(tmp_path, metrics=metrics))
    msg = str(e.value)
    assert "metrics.3.scoring.polarty" in msg and "'polarity'" in msg  # the key and the allowed keys


def test_bad_value_and_unknown_preset_in_a_metrics_scoring(tmp_path):
    for bad, where in (({"polarity": "abs"}, "metrics.0.scoring.polarity"),
                       ({"preset": "siegel2024"}, "metrics.0.scoring.preset")):
        with pytest.raises(ConfigError) as e:
            load_protocol(_write(tmp_path, metrics=[{"name": "relevance_rank_accuracy", "scoring": bad}]))
        assert where in str(e.value)


def test_repeated_metric_needs_a_label_and_criteria_name_labels(tmp_path):
    twice = [{"name": "relevance_rank_accuracy"}, {"name": "relevance_rank_accuracy", "scoring": {"preset": "siegel2025"}}]
    with pytest.raises(ConfigError, match="give repeated metrics a 'label'"):
        load_protocol(_write(tmp_path, metrics=twice))
    with pytest.raises(ConfigError, match="acceptance.0.metric 'rma_plainn'"):
        load_protocol(_write(tmp_path, acceptance=[{"kind": "scaled_ci_above", "metric": "rma_plainn"}]))
    p = load_protocol(_write(tmp_path, acceptance=[{"kind": "scaled_ci_above", "metric": "rma_plain"}]))
    assert [m.key for m in p.metrics] == ["relevance_mass_accuracy", "false_positive", "rma_plain",
                                          "relevance_rank_accuracy"]
    with pytest.raises(ConfigError, match="metrics.0.label"):
        load_protocol(_write(tmp_path, metrics=[{"name": "auroc", "label": "a b"}],
                             acceptance=[{"kind": "model_randomization"}]))


def test_own_scoring_refused_where_it_cannot_act(tmp_path):
    with pytest.raises(ConfigError, match="profile_distances_mm is the run's distance profile"):
        load_protocol(_write(tmp_path, metrics=[{"name": "relevance_rank_accuracy",
                                                 "scoring": {"profile_distances_mm": [0, 4]}}]))
    audit = {k: v for k, v in BASE.items() if k != "tasks"}
    p = tmp_path / "a.yaml"
    p.write_text(yaml.safe_dump({**audit, "kind": "audit", "methods": [],
                                 "metrics": [{"name": "relevance_rank_accuracy", "scoring": {"polarity": "absolute"}}]}))
    with pytest.raises(ConfigError, match="an audit scores every metric under the protocol's"):
        load_protocol(p)


def test_a_metrics_scoring_and_label_are_part_of_the_attribute_stage_key():
    task = SimpleNamespace(subject_ids=["s1", "s2"], split=["test", "test"], scorable=[True, True],
                           summary=lambda: {"type": "positive_control"})

    def key(proto):
        ctx = SimpleNamespace(protocol=proto, manifest_hash="h", grid={"shape": [8, 8, 8]},
                              device=torch.device("cpu"))
        return attribute_key(ctx, "a", task, proto.methods[0], SimpleNamespace(fingerprint="f"))

    base = _proto()
    other = [*BOTH["metrics"][:3], {"name": "relevance_rank_accuracy", "scoring": {"polarity": "positive"}}]
    relabel = [*BOTH["metrics"][:2], {**BOTH["metrics"][2], "label": "rma_abs"}, BOTH["metrics"][3]]
    keys = {key(base), key(_proto(metrics=other)),
            key(_proto(metrics=relabel, acceptance=[{"kind": "model_randomization"}]))}
    assert len(keys) == 3
    assert key(base) == key(_proto())


def test_shipped_paper_protocol_scores_both_ways():
    p = load_protocol("siegel2025-paper")
    assert p.scoring.preset == "siegel2025" and p.version == "1.0"
    own = {m.key: m.scoring_of(p.scoring) for m in p.metrics}
    assert own["relevance_mass_accuracy"].sign == "abs" and own["relevance_mass_accuracy"].percentile == 99.0
    plain = own["relevance_mass_accuracy_plain"]
    assert (plain.preset, plain.sign, plain.percentile, plain.polarity) == (None, None, None, "absolute")
    assert {c.metric for c in p.acceptance if c.metric} == {"relevance_rank_accuracy"}
    assert {"deeplift_zero", "deeplift_mean_image", "guided_backprop", "guided_gradcam", "hirescam", "eigencam",
            "layercam", "lrp_excitation_backprop", "gradcam_block3"} <= {m.key for m in p.methods}


# ----------------------------------------------------------------------------------------------
# DeepLift's mean image
def _net():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1), nn.Tanh(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2)).double().eval()


def test_train_mean_is_the_training_subjects_mean_input_and_deeplift_equals_captum():
    captum_attr = pytest.importorskip("captum.attr")
    g = torch.Generator().manual_seed(5)
    images = {f"s{i}": torch.randn(1, 1, 10, 10, 10, generator=g, dtype=torch.float64) for i in range(7)}
    split = ["train", "test", "train", "train", "val", "train", "test"]
    store = SimpleNamespace(batch=lambda ids, device: {"image": torch.cat([images[s] for s in ids])})
    # the model's input is the modified image (a positive control adds its signal): the mean is of that
    task = SimpleNamespace(subject_ids=list(images), split=split, modify_image=lambda b: b["image"] * 2 + 1)
    ctx = SimpleNamespace(protocol=SimpleNamespace(run=SimpleNamespace(batch_size=3)), device=torch.device("cpu"),
                          train_means={})
    mspec = SimpleNamespace(name="deeplift", params={"baseline": "train_mean"})
    params = method_params(ctx, task, store, mspec)
    want = np.mean([images[s].numpy() * 2 + 1 for s, sp in zip(images, split) if sp == "train"], axis=0)
    assert params["baseline"].shape == (1, 1, 10, 10, 10)
    np.testing.assert_allclose(params["baseline"].numpy(), want, rtol=0, atol=1e-6)  # float32, as validity's fill
    assert train_mean_image(ctx, task, store) is params["baseline"]  # once per task
    assert mspec.params == {"baseline": "train_mean"}  # the protocol's entry is left as it is

    m = _net()
    x = torch.cat([images["s1"], images["s6"]]) * 2 + 1
    t = torch.tensor([1, 0])
    base = params["baseline"].double()
    ours = attribute(m, x, t, "deeplift", baseline=base)
    ref = captum_attr.DeepLift(m).attribute(x, baselines=base.expand_as(x), target=t)
    err, scale = (ours - ref).abs().max().item(), ref.abs().max().item()
    assert scale > 0 and err <= 1e-10 * scale
    delta = (m(x) - m(base.expand_as(x))).gather(1, t.view(-1, 1))[:, 0]
    assert torch.allclose(ours.flatten(1).sum(1), delta.detach(), rtol=0, atol=1e-10)
    # the mean image is not the zero reference, nor each volume's own mean intensity
    assert not torch.allclose(ours, attribute(m, x, t, "deeplift", baseline="zeros"))
    assert not torch.allclose(ours, attribute(m, x, t, "deeplift", baseline="mean"))


def test_train_mean_outside_a_run_says_to_pass_the_tensor():
    with pytest.raises(AttributionError, match="training-split mean image"):
        attribute(_net(), torch.zeros(1, 1, 6, 6, 6, dtype=torch.float64), torch.tensor([0]), "deeplift",
                  baseline="train_mean")
