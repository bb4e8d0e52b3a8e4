"""Audit flags that name the subject and method: masks without maps, maps whose field of view misses
the brain (a wrong affine), maps whose relevance lies outside the brain, and negative-only maps.
A good map on the same data gets none."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from neuroxai.protocol.audit import run_audit

N, S = 10, 16  # subjects, voxels per side (1 mm)
CENTRED = np.diag([1.0, 1.0, 1.0, 1.0])
CENTRED[:3, 3] = -S / 2  # the masks' grid spans [-8, 8) mm: the identity's [0, 16) covers one octant


def _save(arr, affine, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr), affine), str(path))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:S, :S, :S]
    brain = ((zz - 7.5) ** 2 + (yy - 7.5) ** 2 + (xx - 7.5) ** 2) < 7 ** 2
    for i in range(N + 1):  # subject N has a mask but no map
        sid = f"sub-{i:02d}"
        gt = np.zeros((S, S, S), np.uint8)
        gt[5 + i % 3:9 + i % 3, 6:10, 6:10] = 1
        _save(gt, CENTRED, root / "masks" / f"{sid}_mask.nii.gz")
        _save(brain.astype(np.uint8), CENTRED, root / "brain" / f"{sid}_brainmask.nii.gz")
        if i == N:
            continue
        good = gt + 0.05 * rng.random((S, S, S))
        _save(good.astype(np.float32), CENTRED, root / "maps" / "good" / f"{sid}_map.nii.gz")
        _save((-good).astype(np.float32), CENTRED, root / "maps" / "negative" / f"{sid}_map.nii.gz")
        _save(good.astype(np.float32), np.eye(4), root / "maps" / "identity" / f"{sid}_map.nii.gz")
        if i != 3:  # subject 03 has no 'outside' map
            out = np.where(brain, 0.0, 1.0) * rng.random((S, S, S)) + 0.01 * gt
            _save(out.astype(np.float32), CENTRED, root / "maps" / "outside" / f"{sid}_map.nii.gz")
    res = run_audit(root / "maps", root / "masks", root / "out", brain_mask=root / "brain", report=True)
    return root, res


def _flags(res) -> dict:
    out: dict = {}
    for f in res.results.audit.flags:
        out.setdefault(f.method, {}).setdefault(f.subject_id, []).append(f.flag)
    return out


def test_good_maps_are_not_flagged(study):
    assert "good" not in _flags(study[1])


def test_masks_without_maps_are_named(study):
    fl = _flags(study[1])
    assert fl["all methods"] == {f"sub-{N:02d}": [fl["all methods"][f"sub-{N:02d}"][0]]}
    assert "mask without maps" in fl["all methods"][f"sub-{N:02d}"][0]
    assert any("mask without a outside map" in x for x in fl["outside"]["sub-03"])


def test_identity_affine_is_flagged_by_field_of_view(study):
    fl = _flags(study[1])["identity"]
    assert sorted(fl) == [f"sub-{i:02d}" for i in range(N)]
    cov = [x for x in fl["sub-00"] if x.startswith("field of view covers")]
    assert cov and int(cov[0].split()[4]) < 25  # one octant of the brain, about 1/8


def test_relevance_outside_the_brain_is_flagged(study):
    fl = _flags(study[1])["outside"]
    assert sum(any("lies inside the brain mask" in x for x in v) for v in fl.values()) == N - 1


def test_negative_only_maps_are_flagged_and_score_below_chance_under_the_positive_part(study):
    root, res = study
    fl = _flags(res)["negative"]
    assert all(any(x.startswith("negative everywhere") for x in fl[f"sub-{i:02d}"]) for i in range(N))
    by = {x.method: x for x in res.results.methods}
    m = by["negative"].metrics["relevance_rank_accuracy"]
    # scored as |map| (scoring.polarity: absolute, the default): the flipped sign scores as the good map
    assert m.mean == pytest.approx(by["good"].metrics["relevance_rank_accuracy"].mean, abs=1e-12)
    # under polarity 'positive' the same maps score below chance, as the flag warns
    from neuroxai.protocol.schema import load_protocol

    p = load_protocol("audit")
    p = p.model_copy(update={"scoring": p.scoring.model_copy(update={"polarity": "positive"})})
    r2 = run_audit(root / "maps", root / "masks", root / "out_positive", brain_mask=root / "brain",
                   protocol=p, report=False)
    m2 = {x.method: x for x in r2.results.methods}["negative"].metrics["relevance_rank_accuracy"]
    assert m2.mean < m2.chance + 1e-9
    html = (root / "out" / "report" / "index.html").read_text()
    assert "negative everywhere" in html and "mask without maps" in html and "field of view covers" in html


def test_method_order_on_both_grids_is_reported(study):
    from neuroxai.protocol.audit import grid_orders
    import pandas as pd

    root, res = study
    o = res.results.data.grid["orders"]  # the identity-affine maps were resampled: both grids scored
    assert set(o["order"]) == {"mask", "map"} and o["metric"] == "relevance_rank_accuracy"
    assert o["order"]["mask"][0] == "good" and set(o["order"]["map"]) == {"good", "identity", "negative", "outside"}
    html = (root / "out" / "report" / "index.html").read_text()
    assert 'id="grid-orders"' in html and "on the map grid" in html

    def table(a, b):
        return pd.DataFrame({"subject_id": ["s1", "s1", "s2", "s2"], "method": ["A", "B", "A", "B"],
                             "metric": ["m"] * 4, "value": [a, b, a, b]})

    flip = grid_orders({"mask": table(0.5, 0.4), "map": table(0.3, 0.6)}, ["A", "B"], "m")
    assert flip["order"] == {"mask": ["A", "B"], "map": ["B", "A"]} and flip["same_order"] is False
    assert grid_orders({"mask": table(0.5, 0.4), "map": table(0.6, 0.4)}, ["A", "B"], "m")["same_order"] is True
