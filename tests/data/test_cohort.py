"""The embedded cohort: real anatomy, diffeomorphic deformations, exact ground truth, determinism."""
from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from neuroxai.data.cohort import (CohortParams, _Generator, _grid_points, _integrate_svf, _sample,
                                  _smooth_noise, generate_cohort, region_ids)
from neuroxai.data.manifest import load_manifest
from neuroxai.errors import ConfigError

N, SP = 24, 6.0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    return d, generate_cohort(d, n=N, spacing=SP, seed=0)


def _md5(p):
    return hashlib.md5(open(p, "rb").read()).hexdigest()


def test_manifest_is_valid_and_complete(cohort):
    d, path = cohort
    m = load_manifest(path)  # raises on any missing file
    assert len(m) == N and {"segmentation", "lesion_mask", "brain_mask", "age", "sex", "tiv"} <= set(m.columns)
    img = nib.load(m.image[0])
    assert np.allclose(np.sqrt((img.affine[:3, :3] ** 2).sum(0)), SP)
    assert "".join(nib.aff2axcodes(img.affine)) == "RAS"


def test_check_manifest_cli_accepts_the_cohort(cohort):
    from typer.testing import CliRunner

    from neuroxai.cli import app

    _, path = cohort
    r = CliRunner().invoke(app, ["check-manifest", str(path)])
    assert r.exit_code == 0, r.output
    assert str(N) in r.output


def test_same_seed_byte_identical_other_seed_differs(cohort, tmp_path):
    d, path = cohort
    p2 = generate_cohort(tmp_path / "again", n=4, spacing=SP, seed=0)
    p3 = generate_cohort(tmp_path / "other", n=4, spacing=SP, seed=1)
    m, m2, m3 = (pd.read_csv(p) for p in (path, p2, p3))
    for col in ("image", "segmentation", "lesion_mask"):
        for i in range(4):
            assert _md5(d / m[col][i]) == _md5(tmp_path / "again" / m2[col][i])
    assert _md5(d / m.image[0]) != _md5(tmp_path / "other" / m3.image[0])


def test_region_volume_tracks_latent(cohort):
    d, path = cohort
    from neuroxai.tasks import build_task

    t = build_task("region_volume", load_manifest(path), seed=0, target="regression", covariates=["tiv"],
                   split=(0.5, 0.0, 0.5))
    lat = pd.read_csv(d / "derivatives/neuroxai/latent.tsv", sep="\t").set_index("participant_id")["latent"]
    r = np.corrcoef(lat[t.subject_ids].to_numpy(), t.labels)[0, 1]
    assert r > 0.9, r


def test_lesions_inside_white_matter(cohort):
    d, path = cohort
    m = load_manifest(path)
    g = _Generator(CohortParams(n=N, spacing=SP, seed=0))
    n_les = 0
    for i in range(N):
        s = g.subject(i)
        les = nib.load(m.lesion_mask[i]).get_fdata() > 0.5
        assert np.array_equal(les, s["lesion"].numpy())  # the file is the generator's mask
        wm = _sample(g.tpl.linear[1:2], g.tpl.affine, _warp(g, i))[0].numpy()
        assert (wm[les] > 0.9).all()
        n_les += les.sum()
    assert n_les > 0


def _warp(g, i):
    """Recompute subject i's template coordinates (same code path as the generator)."""
    import math
    p = g.p
    ss = np.random.SeedSequence([p.seed, i])
    rng = np.random.default_rng(ss)
    gen = torch.Generator().manual_seed(int(ss.generate_state(1)[0]))
    age, sex = float(rng.uniform(20, 80)), int(rng.integers(0, 2))
    z = float(-p.confound * (age - 50) / 17.3 + math.sqrt(1 - p.confound ** 2) * rng.standard_normal())
    v = _smooth_noise(gen, (4, 5, 4), g.coarse_shape, 3) * p.deform_mm
    y = g.pts + _sample(_integrate_svf(v, g.coarse_aff), g.coarse_aff, g.pts, padding="border").permute(1, 2, 3, 0)
    scale = math.exp(p.head_scale_sd * rng.standard_normal() + (0.03 if sex else 0.0))
    y = g.centre + (y - g.centre) / scale
    d_reg = _integrate_svf(-(p.effect * z / 3.0) * g.box_u, g.box_aff)
    sl = g.box_slices
    y[sl] = y[sl] + _sample(d_reg, g.box_aff, y[sl]).permute(1, 2, 3, 0)
    return y


def test_ground_truth_equals_warped_region(cohort):
    d, path = cohort
    m = load_manifest(path)
    g = _Generator(CohortParams(n=N, spacing=SP, seed=0))
    ids = torch.tensor(region_ids(["Hippocampus_L", "Hippocampus_R"]))
    for i in (0, 5):
        y = _warp(g, i)
        warped = _sample(g.tpl.atlas, g.tpl.affine, y, mode="nearest")[0].round()
        brain = _sample(g.tpl.linear[2:3], g.tpl.affine, y)[0] > 0.5
        region = torch.isin(warped.long(), ids) & brain
        seg = torch.from_numpy(nib.load(m.segmentation[i]).get_fdata())
        assert torch.equal(torch.isin(seg.long(), ids), region)
        assert region.sum() > 10


def _jacobian_det(field_mm: torch.Tensor, spacing: float) -> torch.Tensor:
    """det ∇φ of φ = id + u for u: (3, X, Y, Z) in mm, by central differences."""
    g = [torch.gradient(field_mm[c], spacing=spacing) for c in range(3)]
    J = torch.stack([torch.stack(g[c]) for c in range(3)])  # J[c, axis]
    J = J + torch.eye(3).view(3, 3, 1, 1, 1)
    return torch.linalg.det(J.permute(2, 3, 4, 0, 1))


def test_deformations_are_diffeomorphic():
    g = _Generator(CohortParams(n=4, spacing=4.0, seed=0, effect=0.4, deform_mm=6.0))
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = _smooth_noise(gen, (4, 5, 4), g.coarse_shape, 3) * 6.0
        assert _jacobian_det(_integrate_svf(v, g.coarse_aff), 8.0).min() > 0
    for a in (-0.4, 0.4):  # strongest regional change at |z| = 3 SD
        det = _jacobian_det(_integrate_svf(-a * g.box_u, g.box_aff), 2.0)
        assert det.min() > 0, det.min()
        assert (det.max() > 1.2) if a < 0 else (det.min() < 0.8)


def test_unknown_option_and_region_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="lesion_fraction"):
        generate_cohort(tmp_path, n=12, spacing=8.0, lesion_fraktion=0.2)
    with pytest.raises(ConfigError, match="Hippocampus_L"):
        region_ids(["Hipocampus_L"])
