"""The study's tasks built from regional measures: artificial disease and brain age."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroxai.data.cohort import generate_cohort
from neuroxai.data.manifest import load_manifest
from neuroxai.errors import ConfigError, TaskError
from neuroxai.scoring.siegel2025 import rank_biased_overlap_metric
from neuroxai.tasks import build_task, residualize
from neuroxai.tasks.known_signal import measure_volumes
from neuroxai.tasks.regions import label_table, lateral_pairs
from neuroxai.tasks.siegel2025 import markers, read_effects, true_ordering


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return load_manifest(generate_cohort(tmp_path_factory.mktemp("c"), n=36, spacing=6.0, seed=3))


def test_markers_follow_the_study_rule():
    x = np.arange(100.0)
    m = markers(x, np.ones(100, bool), 0.4)
    # numpy's linear quantiles of 0..99: 39.6 and 59.4
    assert (m[:40] == 0).all() and (m[40:60] == -1).all() and (m[60:] == 1).all()


def test_artificial_disease_labels_and_ground_truth(manifest):
    t = build_task("artificial_disease", manifest, seed=0, high_regions=["Hippocampus_L"],
                   low_regions=["Putamen_L"])
    # the rule, recomputed: covariate-adjusted volumes, train quantiles 0.4 / 0.6
    segs = manifest["segmentation"].tolist()
    cov = manifest[["tiv", "age", "sex"]].to_numpy(float)
    pos = {s: i for i, s in enumerate(manifest["subject_id"])}
    from neuroxai.tasks.base import make_split, quantile_bins

    vh, vl = measure_volumes(segs, [41]), measure_volumes(segs, [77])
    sp = make_split(quantile_bins(vh, 3), seed=0)
    train = sp == "train"
    ah, al = residualize(vh, cov, train)[0], residualize(vl, cov, train)[0]
    hi_h, lo_l = ah >= np.quantile(ah[train], 0.6), al <= np.quantile(al[train], 0.4)
    keep = ((ah >= np.quantile(ah[train], 0.6)) | (ah <= np.quantile(ah[train], 0.4))) & (
        (al >= np.quantile(al[train], 0.6)) | (al <= np.quantile(al[train], 0.4)))
    assert t.subject_ids == manifest["subject_id"][keep].tolist()
    expect = (hi_h & lo_l)[keep].astype(int)
    assert np.array_equal(t.labels, expect) and 0 < t.labels.sum() < len(t.labels)
    assert [pos[s] for s in t.subject_ids] == list(np.flatnonzero(keep))
    # ground truth: both regions and their other hemispheres
    assert t.region_ids == [41, 42, 77, 78]
    seg = torch.zeros(1, 1, 4, 4, 4)
    seg[0, 0, 0, 0, :] = torch.tensor([41.0, 42.0, 77.0, 78.0])
    seg[0, 0, 1, 1, 1] = 45.0
    gt = t.ground_truth({"segmentation": seg, "spacing": (6.0, 6.0, 6.0)})
    assert gt.sum() == 4 and gt[0, 0, 0, 0].all()
    with pytest.raises(ConfigError, match="share"):
        build_task("artificial_disease", manifest, share=0.7)
    with pytest.raises(ConfigError, match="share regions"):
        build_task("artificial_disease", manifest, high_regions=["Putamen_L"], low_regions=["Putamen_L"])


EFFECTS = {"Hippocampus_L": -0.08, "Hippocampus_R": -0.08, "Putamen_L": -0.03, "Putamen_R": -0.03,
           "Caudate_L": -0.05, "Caudate_R": -0.05, "Amygdala_L": -0.02, "Amygdala_R": -0.02,
           "Pallidum_L": 0.01, "Pallidum_R": 0.01}


def test_brain_age_task_regresses_age_and_carries_the_true_ordering(manifest):
    t = build_task("brain_age", manifest, seed=0, effects=EFFECTS)
    assert t.kind == "regression" and t.n_classes == 1
    tr = t.split == "train"
    assert abs(t.labels[tr].mean()) < 1e-5 and t.labels[tr].std() == pytest.approx(1, abs=1e-4)
    age = manifest["age"].to_numpy(float)
    assert np.corrcoef(age, t.labels)[0, 1] == pytest.approx(1.0)
    # ordered by the size of the effect (ties by label)
    ref = t.metric_params["rank_biased_overlap"]["reference"]
    assert ref == [41, 42, 75, 76, 77, 78, 45, 46, 79, 80]
    assert t.info["true_ordering"][:3] == ["Hippocampus_L", "Hippocampus_R", "Caudate_L"]
    assert sorted(t.region_ids) == sorted(ref)
    with pytest.raises(TaskError, match="ordering"):
        build_task("brain_age", manifest)  # no effects, and this cohort simulates none


def test_true_effects_map_scores_the_maximum_and_random_maps_chance(manifest):
    """RBO (p = 1, left/right merged) of a map built from the true effects is 1; random maps score
    the metric's chance on average."""
    import nibabel as nib

    t = build_task("brain_age", manifest, seed=0, effects=EFFECTS)
    ref = t.metric_params["rank_biased_overlap"]["reference"]
    seg = np.asarray(nib.load(manifest["segmentation"].iloc[0]).dataobj).astype(np.int64)
    atlas = torch.from_numpy(seg)[None, None]
    valid = atlas > 0
    pairs = lateral_pairs(label_table(manifest))
    mag = torch.zeros(int(atlas.max()) + 1, dtype=torch.float64)
    for name, e in EFFECTS.items():
        mag[label_table(manifest)[name]] = abs(e) + 1  # the aging regions above all others
    truth = mag[atlas].float()
    s, ch = rank_biased_overlap_metric(truth, valid, valid, atlas=atlas, reference=ref, lateral_pairs=pairs)
    assert float(s[0]) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    rnd = torch.rand((200, 1, *seg.shape), generator=g)
    s_r, ch_r = rank_biased_overlap_metric(rnd, valid.expand_as(rnd), valid.expand_as(rnd),
                                           atlas=atlas, reference=ref, lateral_pairs=pairs)
    # 5 merged aging regions among ~80 merged regions: chance ≈ 0.04
    assert float(ch_r[0]) < 0.1
    assert float(s_r.mean()) == pytest.approx(float(ch_r[0]), abs=0.02)
    assert float(s_r.max()) < 0.5


def test_effects_table_for_real_data(manifest, tmp_path):
    p = tmp_path / "aging.csv"
    p.write_text("region,effect\nPutamen_L,-0.2\nHippocampus_L,-0.1\nLateral-Ventricle,0\n")
    with pytest.raises(ConfigError, match="Lateral-Ventricle"):  # not in this segmentation's table
        build_task("brain_age", manifest, effects_csv=str(p))
    p.write_text("region,effect\nPutamen_L,-0.2\nHippocampus_L,-0.1\nAmygdala_L,0.3\n")
    t = build_task("brain_age", manifest, effects_csv=str(p))
    assert t.metric_params["rank_biased_overlap"]["reference"] == [45, 77, 41]
    assert read_effects(p) == {"Putamen_L": -0.2, "Hippocampus_L": -0.1, "Amygdala_L": 0.3}
    p.write_text("name,change\nPutamen_L,-0.2\n")
    with pytest.raises(TaskError, match="region"):
        read_effects(p)
    assert true_ordering({"Putamen_L": -0.1, "Putamen_R": 0.1}, {"Putamen_L": 77, "Putamen_R": 78}) == [77, 78]
