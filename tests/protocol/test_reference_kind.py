"""``kind: reference``: a model of the data's own labels judged against its causal atlas occlusion.

The causal ranking recovers the one region a model depends on (the positive control); a method
whose map equals the occlusion map scores the maximum; the kind runs end to end on a model trained
on the embedded cohort's own label (sex) and on a model given as a checkpoint file with a manifest
(the CLI's ``validate --model CKPT --data MANIFEST``); bad reference settings are refused when the
protocol loads, before any data is generated.
"""
from __future__ import annotations

import json
import textwrap

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from neuroxai.attribution import attribute
from neuroxai.cli import app
from neuroxai.errors import ConfigError
from neuroxai.protocol.runner import run_protocol
from neuroxai.protocol.schema import load_protocol
from neuroxai.report.schema import read_results
from neuroxai.scoring.reference import causal_ranks
from neuroxai.scoring.region import region_means

S = 16  # volumes of S³ voxels
CLAIMED = 4  # the one box region the checkpoint model reads


def _boxes() -> torch.Tensor:
    """(1,1,S,S,S) atlas: eight 8³ octant boxes, labels 1–8 (the shell at the border is background)."""
    a = torch.zeros(1, 1, S, S, S, dtype=torch.long)
    h = S // 2
    for i, (x, y, z) in enumerate([(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)], 1):
        a[0, 0, x * h + 1:(x + 1) * h - 1, y * h + 1:(y + 1) * h - 1, z * h + 1:(z + 1) * h - 1] = i
    return a


class RegionReader(torch.nn.Module):
    """Depends on one region only: the logit is ``w ×`` the input's mean over ``mask``
    (class 1: +, class 0: −)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.w = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, x):
        s = self.w * (x * self.mask).flatten(1).sum(1) / self.mask.sum()
        return torch.stack([-s, s], 1)


def test_the_causal_ranking_recovers_the_one_region_the_model_uses():
    atlas = _boxes()
    model = RegionReader(atlas == CLAIMED).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, S, S, S, generator=g)
    mean = torch.randn(1, 1, S, S, S, generator=g)
    target = torch.ones(5, dtype=torch.long)
    occ = attribute(model, x, target, "atlas_occlusion", atlas=atlas, mean_image=mean)
    eff = region_means(occ, atlas.expand(5, -1, -1, -1, -1), torch.ones_like(occ, dtype=torch.bool), 9)
    ranks = causal_ranks(eff)
    assert int(ranks[CLAIMED]) == 1
    # analytic: |Δ logit| / |region| with the region set to the mean image's mean over it
    r = (atlas == CLAIMED)[0, 0]
    n = int(r.sum())
    expected = 3.0 * (x[:, 0][:, r].mean(1) - mean[0, 0][r].mean()).abs() / n
    assert torch.allclose(eff[:, CLAIMED], expected.double(), rtol=1e-5)
    others = [lab for lab in range(1, 9) if lab != CLAIMED]
    assert torch.all(eff[:, others] == 0)


# ------------------------------------------------------------------------------ end to end

EMBEDDED = """
id: ref_tiny
version: "0.1"
kind: reference
data:
  source: embedded
  cohort: {n: 24, spacing_mm: 8.0, seed: 0}
tasks:
  - id: sex
    type: user_label
    params: {column: sex, split: [0.5, 0.1, 0.4]}
model:
  architecture: small_cnn
  params: {channels: [4, 8]}
  training: {epochs: 1, batch_size: 8, lr: 0.003, seed: 0}
methods:
  - name: gradient
  - name: random
    params: {seed: 0}
  - name: atlas_occlusion
reference: {n_subjects: 5, min_subjects: 3, claims: [{region: Hippocampus_L}]}
statistics: {bootstrap: 200, seed: 0}
run: {device: cpu, batch_size: 4, seed: 0}
"""


def test_reference_runs_on_a_model_trained_on_the_cohort_s_own_label(tmp_path):
    p = tmp_path / "ref.yaml"
    p.write_text(EMBEDDED)
    res = run_protocol(load_protocol(p), tmp_path / "run")
    r = read_results(tmp_path / "run" / "results.json")
    assert r.kind == "reference" and r.reference is not None and r.reference.task == "sex"
    assert r.tasks[0].ground_truth.startswith("none") and r.tasks[0].summary["column"] == "sex"
    by = {m.method: m for m in r.reference.methods}
    assert set(by) == {"gradient", "random", "atlas_occlusion"} and r.reference.n_subjects == 5
    # the occlusion map itself, run as a method, reproduces the reference exactly
    occ = by["atlas_occlusion"]
    assert occ.spearman.mean == pytest.approx(1.0) and occ.rbo.mean == pytest.approx(occ.rbo.max)
    assert r.reference.order[0] == "atlas_occlusion" and occ.rank == 1
    assert all(m.verdict in ("PASS", "FAIL", "INCONCLUSIVE") and m.verdict_reason for m in by.values())
    if r.tasks[0].model.at_chance:  # one epoch on 12 subjects: the model may have learned nothing
        assert all(m.verdict == "INCONCLUSIVE" and "chance" in m.verdict_reason for m in by.values())
    claim = r.reference.claims[0]
    assert claim.region == "Hippocampus_L" and claim.label == 41 and claim.n == 5
    # the verdict table and the report carry it: one MethodResult per method, the same verdicts
    assert {m.method: m.verdict for m in r.methods} == {k: m.verdict for k, m in by.items()}
    assert r.methods[0].metrics["reference_spearman"].mean == occ.spearman.mean
    html = (res.report_dir / "index.html").read_text()
    assert "The reference is causal occlusion, not a ground truth." in html
    table = pd.read_csv(res.report_dir / "reference.csv")
    assert table["method"].tolist() == r.reference.order and table.loc[0, "spearman_mean"] == pytest.approx(1.0)
    per_subject = [pd.read_csv(f) for f in (tmp_path / "run").glob("stages/reference_ranking/*/subjects.csv")]
    assert len(per_subject) == 3 and all(len(t) == 5 for t in per_subject)
    assert not (tmp_path / "run" / "stages" / "attribute").exists()  # no ground-truth scoring ran


def _manifest(tmp_path, n=40) -> tuple:
    """``n`` subjects of S³ noise, the atlas of eight boxes, label 1 = box CLAIMED brighter."""
    atlas = _boxes()[0, 0].numpy().astype(np.int16)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    g = np.random.default_rng(0)
    seg_dir = tmp_path / "data" / "seg"
    seg_dir.mkdir(parents=True)
    pd.DataFrame({"index": range(1, 9), "name": [f"box{i}" for i in range(1, 9)]}).to_csv(
        seg_dir / "dseg.tsv", sep="\t", index=False)
    rows = []
    for i in range(n):
        lab = i % 2
        img = 100 + 10 * g.normal(size=(S, S, S)) + 40 * lab * (atlas == CLAIMED)
        ip, sp = tmp_path / "data" / f"sub-{i:02d}_T1w.nii.gz", seg_dir / f"sub-{i:02d}_dseg.nii.gz"
        nib.save(nib.Nifti1Image(img.astype(np.float32), aff), ip)
        nib.save(nib.Nifti1Image(atlas, aff), sp)
        rows.append({"subject_id": f"sub-{i:02d}", "image": str(ip), "segmentation": str(sp), "diagnosis": lab})
    csv = tmp_path / "data" / "manifest.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, torch.as_tensor(atlas == CLAIMED)[None, None]


CHECKPOINT = """
id: ref_ckpt
version: "0.1"
kind: reference
tasks:
  - id: dx
    type: user_label
    params: {column: diagnosis, split: [0.5, 0.0, 0.5]}
methods:
  - name: gradient
  - name: random
    params: {seed: 0}
reference: {rbo_depth: 4, claims: [{region: box4}, {region: box2}]}
statistics: {bootstrap: 500, seed: 0}
run: {device: cpu, batch_size: 8, seed: 0}
"""


def test_reference_runs_on_a_checkpoint_given_on_the_command_line(tmp_path):
    csv, mask = _manifest(tmp_path)
    ts = tmp_path / "prior_study.ts"
    torch.jit.save(torch.jit.script(RegionReader(mask)), ts)
    proto = tmp_path / "ref_ckpt.yaml"
    # the claims name the manifest's atlas (its dseg.tsv), so the protocol names the manifest as its data
    proto.write_text(CHECKPOINT.replace("tasks:", f"data: {{source: manifest, manifest: {csv}}}\ntasks:", 1))
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["validate", str(proto), "--model", str(ts), "--data", str(csv), "--out", str(out),
                                 "-q"])
    res = read_results(out / "results.json")
    assert r.exit_code == res.overall.exit_code, r.output
    assert res.kind == "reference" and res.tasks[0].model.auroc == 1.0
    ref = res.reference
    by = {m.method: m for m in ref.methods}
    # the gradient of a region mean is constant inside the region, zero elsewhere: the same ranking
    assert by["gradient"].spearman.mean == pytest.approx(1.0) and by["gradient"].rbo.mean == pytest.approx(1.0)
    assert by["gradient"].verdict == "PASS" and res.overall.verdict == "PASS" and r.exit_code == 0
    assert by["random"].spearman.mean < 0.5 and ref.order == ["gradient", "random"]
    # the causal ranking puts the box the model reads first; the claims follow it
    assert ref.top_regions[0].region == "box4" and ref.top_regions[0].causal_rank == 1
    c4, c2 = ref.claims
    assert (c4.region, c4.supported, c4.causal_rank) == ("box4", True, 1) and c4.excess_ci_low > 0
    assert c2.region == "box2" and c2.supported is False and c2.effect_mean == 0.0
    assert json.loads((out / "results.json").read_text())["reference"]["claims"][0]["supported"] is True


# ------------------------------------------------------------------------------ refused at load

BASE = textwrap.dedent(EMBEDDED)


@pytest.mark.parametrize("old,new,key", [
    ("reference: {n_subjects", "metrics: [{name: auroc}]\nreference: {n_subjects", "metrics"),
    ("reference: {n_subjects", "acceptance: [{kind: model_randomization}]\nreference: {n_subjects", "acceptance"),
    ("reference: {n_subjects", "validity: {enabled: true}\nreference: {n_subjects", "validity"),
    ("reference: {n_subjects", "scoring: {smooth_fwhm_mm: 4}\nreference: {n_subjects", "scoring.smooth_fwhm_mm"),
    ("  - name: atlas_occlusion", "  - name: oracle", "methods.2.name"),
    ("split: [0.5, 0.1, 0.4]}", "split: [0.5, 0.1, 0.4]}\n    null_control: true", "tasks.0.null_control"),
    ("seed: 0}\nmethods", "seeds: [0, 1]}\nmethods", "model.training.seeds"),
    ("{region: Hippocampus_L}", "{region: Hipocampus_L}", "reference.claims.0.region"),
    ("model:\n", "  - id: second\n    type: user_label\n    params: {column: sex}\nmodel:\n", "tasks"),
])
def test_a_bad_reference_setting_is_refused_before_any_data(tmp_path, old, new, key):
    assert old in BASE
    p = tmp_path / "bad.yaml"
    p.write_text(BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        run_protocol(p, tmp_path / "run")
    msg = str(e.value)
    assert key in msg and "expected" in msg.lower() and "found" in msg.lower() and e.value.fix
    assert not (tmp_path / "run").exists()  # refused before a folder was made or a cohort generated


def test_kind_mismatches_are_refused(tmp_path):
    quick = (load_protocol("quick").model_dump(mode="json"))
    p = tmp_path / "q.yaml"
    import yaml

    quick["tasks"][0] = {"id": "dx", "type": "user_label", "params": {"column": "sex"}}
    p.write_text(yaml.safe_dump(quick))
    with pytest.raises(ConfigError, match="tasks.0.type: 'user_label' has no known signal"):
        load_protocol(p)
    quick = load_protocol("quick").model_dump(mode="json")
    quick["reference"] = {"min_spearman": 0.5}
    p.write_text(yaml.safe_dump(quick))
    with pytest.raises(ConfigError, match="reference: not a setting"):
        load_protocol(p)


def test_the_shipped_reference_protocol_loads():
    p = load_protocol("reference")
    assert p.kind == "reference" and p.tasks[0].type == "user_label" and not p.metrics and not p.acceptance
    assert {m.name for m in p.methods} >= {"gradient", "smoothgrad", "gradcam", "lrp", "random"}


# ------------------------------------------------------------------------------ verdict rules


def _judge(tables: dict, eff: np.ndarray | None = None, at_chance=False, **spec):
    from neuroxai.protocol.causal_reference import reference_result
    from neuroxai.protocol.stages.occlusion_reference import Effects
    from neuroxai.report.schema import ModelPerf

    proto = load_protocol("reference").model_copy(deep=True)
    proto.reference = proto.reference.model_copy(update={"claims": [], **spec})
    proto.statistics = proto.statistics.model_copy(update={"bootstrap": 500, "ci_method": "percentile"})
    proto.methods = [m.model_copy(update={"name": "gradient", "label": k}) for k, m in zip(tables, proto.methods)]
    first = next(iter(tables.values()))
    n = len(first[0] if isinstance(first, tuple) else first)
    if eff is None:
        eff = np.tile(np.r_[np.nan, np.linspace(1, 0.1, 9)], (n, 1))
    # a value is both measures' per-subject column, or a pair (spearman, rbo)
    pairs = {k: v if isinstance(v, tuple) else (v, v) for k, v in tables.items()}
    tbl = {k: pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "spearman": sp, "rbo": rb,
                            "rbo_chance": 0.0, "rbo_max": 1.0}) for k, (sp, rb) in pairs.items()}
    return reference_result(proto, "t", Effects([f"s{i}" for i in range(n)], eff, "k"), tbl,
                            ModelPerf(at_chance=at_chance), {f"r{i}": i for i in range(1, 10)})


def test_verdicts_follow_the_ci_against_the_threshold():
    g = np.random.default_rng(0)
    r = _judge({"good": 0.9 + 0.01 * g.normal(size=20), "poor": 0.05 + 0.01 * g.normal(size=20),
                "open": np.r_[np.zeros(10), 0.5 * np.ones(10)]})
    by = {m.method: m for m in r.methods}
    assert by["good"].verdict == "PASS" and by["poor"].verdict == "FAIL" and by["open"].verdict == "INCONCLUSIVE"
    assert "upper CI bound" in by["poor"].verdict_reason and "reaches below 0.2" in by["open"].verdict_reason
    assert r.order == ["good", "open", "poor"] and [m.rank for m in r.methods] == [1, 2, 3]
    assert by["open"].rbo.scaled_ci_low < 0.2 < by["open"].rbo.scaled_ci_high


def test_rbo_is_judged_on_the_chance_to_identical_scale():
    from neuroxai.protocol.causal_reference import _agreement, _ci

    t = pd.DataFrame({"rbo": [0.5, 0.7], "rbo_chance": [0.25, 0.4], "rbo_max": [1.0, 1.0]})
    a = _agreement(t, "rbo", load_protocol("reference"))
    assert a.scaled_mean == pytest.approx((1 / 3 + 0.5) / 2) and a.mean == pytest.approx(0.6)
    assert a.chance == pytest.approx(0.325) and _ci(np.array([1.0]), load_protocol("reference"))[1] is None


def test_undecidable_runs_are_inconclusive():
    good = {"good": np.full(20, 0.9)}
    assert "chance" in _judge(good, at_chance=True).methods[0].verdict_reason
    few = _judge({"good": np.full(3, 0.9)})
    assert few.methods[0].verdict == "INCONCLUSIVE" and "too few subjects" in few.methods[0].verdict_reason
    still = _judge(good, eff=np.tile(np.r_[np.nan, np.zeros(9)], (20, 1)))
    assert still.methods[0].verdict == "INCONCLUSIVE" and "no atlas occlusion moves" in still.methods[0].verdict_reason
    # a threshold on Spearman alone
    assert _judge(good, min_rbo=None, min_spearman=0.95).methods[0].verdict == "FAIL"


def test_claims_read_the_causal_effects():
    g = np.random.default_rng(1)
    eff = 0.1 + 0.01 * g.random((12, 10))
    eff[:, 0] = np.nan
    eff[:, 5] += 1.0  # the region the model relies on
    eff[:, 9] = np.nan  # absent from every subject
    proto_claims = [{"region": "r5"}, {"region": "r2"}, {"region": 9}]
    from neuroxai.protocol.schema import ClaimSpec

    r = _judge({"m": np.full(12, 0.5)}, eff=eff, claims=[ClaimSpec(**c) for c in proto_claims], top_k=3)
    c5, c2, c9 = r.claims
    assert (c5.supported, c5.causal_rank, c5.label) == (True, 1, 5) and c5.excess_ci_low > 0.9
    assert c5.effect_mean == pytest.approx(eff[:, 5].mean())
    assert c2.supported is False and c2.causal_rank > 1
    assert c9.supported is None and c9.causal_rank is None and "cannot tell" in c9.reading
    assert r.top_regions[0].region == "r5" and len(r.top_regions) == 3


def test_a_reference_without_any_criterion_is_refused(tmp_path):
    p = tmp_path / "none.yaml"
    p.write_text(BASE.replace("reference: {n_subjects: 5,", "reference: {min_rbo: null, n_subjects: 5,", 1))
    with pytest.raises(ConfigError, match="min_rbo and min_spearman are both null"):
        load_protocol(p)


def test_methods_rank_by_the_chosen_measure():
    g = np.random.default_rng(2)
    hi, lo = 0.8 + 0.01 * g.normal(size=10), 0.5 + 0.01 * g.normal(size=10)
    tables = {"a": (lo, hi), "b": (hi, lo)}  # a: better RBO, b: better ρ
    assert _judge(tables).order == ["a", "b"]
    r = _judge(tables, rank_by="spearman")
    assert r.order == ["b", "a"] and r.rank_by == "spearman" and [m.rank for m in r.methods] == [1, 2]


def test_export_is_refused_for_a_reference_run(tmp_path):
    p = tmp_path / "ref.yaml"
    p.write_text(EMBEDDED)
    with pytest.raises(ConfigError, match="no ground-truth masks to export"):
        run_protocol(p, tmp_path / "run", export=tmp_path / "exp")
    assert not (tmp_path / "run").exists()
