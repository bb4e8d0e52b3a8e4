"""Known-signal tasks on a tiny embedded cohort: labels, splits, ground truth, controls."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neuroxai.data.cohort import generate_cohort
from neuroxai.data.manifest import load_manifest
from neuroxai.errors import ConfigError, TaskError
from neuroxai.tasks import build_task, make_split, residualize


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return load_manifest(generate_cohort(tmp_path_factory.mktemp("c"), n=36, spacing=6.0, seed=3))


def test_split_is_by_subject_stratified_and_seeded():
    labels = np.array([0] * 50 + [1] * 30)
    a, b, c = make_split(labels, seed=1), make_split(labels, seed=1), make_split(labels, seed=2)
    assert (a == b).all() and (a != c).any()
    for cls in (0, 1):
        frac = (a[labels == cls] == "train").mean()
        assert abs(frac - 0.6) < 0.05
    assert set(a) == {"train", "val", "test"}


def test_residualization_uses_training_split_only():
    rng = np.random.default_rng(0)
    tiv = rng.normal(1500, 100, 60)
    y = 0.004 * tiv + rng.normal(0, 0.3, 60)
    train = np.arange(60) < 40
    res_train, beta = residualize(y, tiv[:, None], train)
    res_all, _ = residualize(y, tiv[:, None], np.ones(60, bool))
    X = np.column_stack([np.ones(40), tiv[:40]])
    expect = np.linalg.lstsq(X, y[:40], rcond=None)[0]
    assert np.allclose(beta, expect)
    assert not np.allclose(res_train[40:], res_all[40:])  # fitting on all data would change test labels


def test_region_volume_classes_follow_adjusted_volume(manifest):
    t = build_task("region_volume", manifest, seed=0)
    assert t.kind == "classification" and set(np.unique(t.labels)) == {0, 1}
    assert len(t.subject_ids) < len(manifest)  # middle third dropped
    vol = pd.Series(t.info["raw_volume_ml"])
    # with TIV/age/sex regressed out, class 1 has the larger regions on average
    assert vol[np.array(t.subject_ids)[t.labels == 1]].mean() > vol[np.array(t.subject_ids)[t.labels == 0]].mean()
    assert t.confound["metric"] == "auroc"


def test_region_ground_truth_and_margin(manifest):
    t0 = build_task("region_volume", manifest, seed=0)
    t2 = build_task("region_volume", manifest, seed=0, margin_mm=6.0)
    seg = torch.zeros(1, 1, 8, 8, 8)
    seg[0, 0, 4, 4, 4] = 41.0  # Hippocampus_L
    seg[0, 0, 1, 1, 1] = 45.0  # Amygdala_L: not part of the region
    b = {"segmentation": seg, "spacing": (6.0, 6.0, 6.0)}
    assert t0.ground_truth(b).sum() == 1 and t0.ground_truth(b)[0, 0, 4, 4, 4]
    assert t2.ground_truth(b).sum() == 7  # 6 mm margin at 6 mm spacing: the 6-neighbourhood


def test_lesion_task_excludes_lesion_free_subjects_from_scoring(manifest):
    t = build_task("lesion", manifest, seed=0)
    assert np.array_equal(t.scorable, t.labels == 1)
    assert 0 < t.scorable.sum() < len(t.scorable)


def test_null_control_permutes_labels_within_splits(manifest):
    base = build_task("region_volume", manifest, seed=0)
    null = build_task("null_control", manifest, seed=0, base="region_volume", permutation_seed=1)
    assert null.subject_ids == base.subject_ids and (null.split == base.split).all()
    for s in ("train", "val", "test"):
        assert sorted(null.labels[null.split == s]) == sorted(base.labels[base.split == s])
    assert (null.labels != base.labels).any()


def test_positive_control_inserts_signal_only_in_region_of_positive_subjects(manifest):
    t = build_task("positive_control", manifest, seed=0, strength=0.5)
    pos = [s for s, lab in zip(t.subject_ids, t.labels) if lab == 1][0]
    neg = [s for s, lab in zip(t.subject_ids, t.labels) if lab == 0][0]
    seg = torch.zeros(2, 1, 4, 4, 4)
    seg[:, 0, 1, 1, 1] = 42.0
    b = {"subject_id": [pos, neg], "image": torch.zeros(2, 1, 4, 4, 4), "segmentation": seg, "spacing": (1, 1, 1)}
    x = t.modify_image(b)
    assert x[0].sum() == pytest.approx(0.5) and x[0, 0, 1, 1, 1] == 0.5 and x[1].abs().sum() == 0


def test_bad_parameters_are_named(manifest):
    with pytest.raises(ConfigError, match="regoins"):
        build_task("region_volume", manifest, regoins=["x"])
    with pytest.raises(ConfigError, match="Hippocampus"):
        build_task("region_volume", manifest, regions=["Hippocampus"])
    with pytest.raises(TaskError, match="lesion_mask"):
        build_task("lesion", manifest.drop(columns="lesion_mask"))


def test_region_volume_ground_truth_choice(manifest):
    from neuroxai.data.dataset import VolumeDataset

    sig = build_task("region_volume", manifest, ground_truth="signal_support")
    reg = build_task("region_volume", manifest, margin_mm=6.0)
    assert sig.required_keys == ("segmentation", "signal_mask")
    assert sig.info["ground_truth"] == "signal_support"
    ds = VolumeDataset(manifest.iloc[:2].reset_index(drop=True), keys=("segmentation", "signal_mask"))
    it = ds[0]
    b = {"segmentation": it["segmentation"][None], "signal_mask": it["signal_mask"][None],
         "spacing": (6.0, 6.0, 6.0)}
    assert torch.equal(sig.ground_truth(b), it["signal_mask"][None].bool())
    # The region dilated by 6 mm contains the region; the support is a different set of voxels.
    region = build_task("region_volume", manifest).ground_truth(b)
    dil = reg.ground_truth(b)
    assert (dil >= region).all() and dil.sum() > region.sum()
    assert not torch.equal(sig.ground_truth(b), region)
    with pytest.raises(ConfigError, match="ground_truth"):
        build_task("region_volume", manifest, ground_truth="blob")
    with pytest.raises(TaskError, match="signal_mask"):
        build_task("region_volume", manifest.drop(columns="signal_mask"), ground_truth="signal_support")


def test_lesion_load_is_a_regression_scored_on_the_undilated_mask(manifest):
    """White-matter lesion load (Siegel et al. 2025): log(1 + ml) as a regression target; ground
    truth each subject's own lesion mask, not dilated; lesion-free subjects are not scored."""
    import nibabel as nib

    t = build_task("lesion", manifest, seed=0, target="load")
    assert t.kind == "regression" and t.n_classes == 1
    ml = []
    for p in manifest["lesion_mask"]:
        img = nib.load(p)
        ml.append((np.asarray(img.dataobj) > 0.5).sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000)
    assert np.allclose(t.labels, np.log1p(ml), atol=1e-6)
    assert np.array_equal(t.scorable, np.asarray(ml) > 0)
    m = torch.zeros(1, 1, 6, 6, 6)
    m[0, 0, 2, 2, 2] = 1.0
    gt = t.ground_truth({"lesion_mask": m, "spacing": (6.0, 6.0, 6.0)})
    assert gt.dtype == torch.bool and gt.sum() == 1 and gt[0, 0, 2, 2, 2]
