"""Corrected regional measures (cIDPs, Siegel et al. 2025): analytic cases and the task option."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from neuroxai.data.cohort import generate_cohort
from neuroxai.data.manifest import load_manifest
from neuroxai.errors import ConfigError
from neuroxai.tasks import build_task, residualize
from neuroxai.tasks.cidp import (label_volumes, parse_correction, pca_correct, principal_scores,
                                 same_structure, voxel_target_correlation)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return load_manifest(generate_cohort(tmp_path_factory.mktemp("c"), n=36, spacing=6.0, seed=3))


def _global_factor(n=300, m=40, seed=0):
    """Other regions and a target sharing one global factor g; the target's own signal s."""
    rng = np.random.default_rng(seed)
    g, s = rng.standard_normal(n), rng.standard_normal(n)
    load = rng.uniform(0.5, 1.5, m)
    others = 10 + np.outer(g, load) + 0.1 * rng.standard_normal((n, m))
    y = 5 + 2.0 * g + s
    return y, others, g, s


def test_global_factor_is_removed_at_one_component():
    y, others, g, s = _global_factor()
    train = np.arange(len(y)) < 200
    raw, _ = pca_correct(y, others, train, 0)
    one, info = pca_correct(y, others, train, 1)
    te = ~train
    # Uncorrected: the global factor dominates (var 4 against 1).
    assert np.corrcoef(raw[te], g[te])[0, 1] > 0.85
    # One component removes it; what is left is the region's own signal (whose chance
    # correlation with g in this sample is all the correlation left).
    left = np.corrcoef(one[te], g[te])[0, 1] - np.corrcoef(s[te], g[te])[0, 1]
    assert abs(left) < 0.05  # uncorrected: 0.85
    assert np.corrcoef(one[te], s[te])[0, 1] > 0.98
    assert info["pca_components"] == 1 and info["r2_removed_train"] == pytest.approx(0.8, abs=0.05)


def test_zero_components_is_the_covariate_residual():
    y, others, g, _ = _global_factor(seed=1)
    train = np.arange(len(y)) % 3 != 0
    covs = g[:, None] + 0.5
    res, _ = pca_correct(y, others, train, 0, covs)
    expect, _ = residualize(y, covs, train)
    assert np.array_equal(res, expect)


def test_principal_scores_match_sklearn_pca_fitted_on_train():
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    _, others, _, _ = _global_factor(n=80, m=12, seed=2)
    train = np.arange(80) < 50
    sc = StandardScaler().fit(others[train])
    ref = PCA().fit(sc.transform(others[train])).transform(sc.transform(others))
    ours = principal_scores(others, train)
    assert ours.shape == ref.shape
    # components are defined up to sign
    assert np.allclose(np.abs(ours), np.abs(ref), atol=1e-8)


def test_too_many_components_and_bad_options_are_named():
    y, others, _, _ = _global_factor(n=30, m=40)
    train = np.arange(30) < 20
    with pytest.raises(ConfigError, match="pca_components"):
        pca_correct(y, others, train, 25)  # 20 training rows give at most 19 components
    assert parse_correction(None) == 0 and parse_correction({"pca_components": 7}) == 7
    with pytest.raises(ConfigError, match="correction"):
        parse_correction({"n_pcs": 3})
    with pytest.raises(ConfigError, match="pca_components"):
        parse_correction({"pca_components": -1})


def test_label_volumes_and_same_structure(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[0, 0, :3] = 41
    a[1, 1, 1] = 42
    a[2, 2, 2] = 7
    p = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(a, np.diag([2.0, 2.0, 2.0, 1.0])), p)
    labs, vols = label_volumes([str(p), str(p)])
    assert labs.tolist() == [7, 41, 42]
    assert vols[0].tolist() == pytest.approx([0.008, 0.024, 0.008])
    assert same_structure([41], {41: 42, 42: 41, 7: 8}) == {41, 42}


def test_voxel_target_correlation_is_pearson():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((25, 6))
    x[:, 5] = 1.0  # a constant voxel
    t = x[:, 0] * 0.7 + rng.standard_normal(25)
    r = voxel_target_correlation(x, t)
    expect = [np.corrcoef(x[:, j], t)[0, 1] for j in range(5)]
    assert np.allclose(r[:5], expect) and r[5] == 0


def test_region_volume_correction_option(manifest):
    base = build_task("region_volume", manifest, seed=0, target="regression")
    k0 = build_task("region_volume", manifest, seed=0, target="regression", correction={"pca_components": 0})
    k3 = build_task("region_volume", manifest, seed=0, target="regression", correction={"pca_components": 3})
    assert np.array_equal(base.labels, k0.labels)  # k = 0 is the uncorrected task
    assert k0.summary() == base.summary()  # stage keys of uncorrected tasks unchanged
    assert not np.allclose(base.labels, k3.labels)
    c = k3.info["correction"]
    assert c["pca_components"] == 3 and c["left_out_labels"] == [41, 42]
    assert c["n_other_regions"] > 100  # the other AAL3 regions present in the segmentations
    # the corrected label is uncorrelated, on the training split, with the first 3 components
    # of the other regions' volumes (what the regression removed)
    from neuroxai.tasks.cidp import label_volumes as lv

    labs, vols = lv(manifest["segmentation"].tolist())
    others = vols[:, ~np.isin(labs, [41, 42])]
    train = k3.split == "train"
    pcs = principal_scores(others, train)[:, :3]
    for j in range(3):
        assert abs(np.corrcoef(k3.labels[train], pcs[train, j])[0, 1]) < 1e-8
    with pytest.raises(ConfigError, match="pca_components"):
        build_task("region_volume", manifest, correction={"pca_components": 500})
