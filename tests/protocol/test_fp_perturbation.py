"""The false-positive perturbation (Siegel et al. 2025, 2026 revision): its voxel sets equal the
study's construction (scipy, on the same maps), a false positive the model uses moves the output
and one it ignores does not, and a run reports it per method."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage

from neuroxai.protocol.runner import run_protocol
from neuroxai.protocol.schema import load_protocol
from neuroxai.protocol.stages.perturb import lr_axis, perturbation_deltas, summarize
from neuroxai.scoring.siegel2025 import false_positive_sets


def _study_sets(expl, target, brain, gt_it, fp_it, q, sigma):
    """``main_fp_perturb.py: test_step`` on one subject, written as the study writes it (numpy/scipy)."""
    e = ndimage.gaussian_filter(np.abs(expl), sigma=sigma)
    # (scipy's iterations=0 means "until nothing changes"; the study always dilates, 0 here is none)
    dil = ndimage.binary_dilation(target, iterations=gt_it) if gt_it else target
    th = np.percentile(e[dil], q)
    fp = e > th
    fp[dil] = False
    fp = ndimage.binary_dilation(fp, iterations=fp_it) if fp_it else fp
    flipped = fp[::-1, :, :] & brain & ~dil
    return fp & brain & ~dil, flipped


@pytest.mark.parametrize("gt_it, fp_it, q, sigma", [(3, 1, 99.0, 1.0), (5, 2, 95.0, 1.699), (0, 0, 90.0, 0.0)])
def test_the_sets_are_the_studys(gt_it, fp_it, q, sigma):
    rng = np.random.default_rng(gt_it)
    B, shape = 3, (20, 18, 16)
    expl = rng.normal(size=(B, *shape))
    target = np.zeros((B, *shape), bool)
    target[:, 4:8, 6:10, 5:9] = True
    brain = np.zeros((B, *shape), bool)
    brain[:, 1:-1, 1:-1, 1:-1] = True
    got = false_positive_sets(torch.tensor(expl)[:, None], torch.tensor(target)[:, None], torch.tensor(brain)[:, None],
                              gt_dilation=gt_it, fp_dilation=fp_it, percentile=q, smooth_sigma_vox=sigma, lr_axis=2)
    for i in range(B):
        fp, flip = _study_sets(expl[i], target[i], brain[i], gt_it, fp_it, q, sigma)
        assert fp.sum() > 0
        np.testing.assert_array_equal(got["fp"][i, 0].numpy(), fp)
        np.testing.assert_array_equal(got["flip"][i, 0].numpy(), flip)
        assert got["overlap"][i].item() == pytest.approx((fp & flip).sum() / max(flip.sum(), 1))


def test_the_left_right_axis_is_read_from_the_affine():
    assert lr_axis(np.diag([2.0, 2.0, 2.0, 1.0])) == 2
    a = np.zeros((4, 4))
    a[0, 1], a[1, 0], a[2, 2], a[3, 3] = -1.0, 1.0, 1.0, 1.0  # world x runs along the second array axis
    assert lr_axis(a) == 3


class _Linear(torch.nn.Module):
    """Two logits; the decision score (class 1 − class 0) is the sum of ``w · x``."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1, keepdim=True)
        return torch.cat([-s / 2, s / 2], 1)


def test_a_used_false_positive_moves_the_output_and_an_ignored_one_does_not():
    shape = (1, 1, 24, 12, 12)
    gt = torch.zeros(shape, dtype=torch.bool)
    gt[..., 2:5, 4:8, 4:8] = True  # the ground truth, in the "left" half (low first-axis index)
    used = torch.zeros(shape, dtype=torch.bool)
    used[..., 14:17, 4:8, 4:8] = True  # an off-target region the model reads (its mirror: 7:10, empty)
    w = gt.double() + used.double()
    model = _Linear(w)
    x = torch.ones(shape, dtype=torch.float64) * 2.0
    brain = torch.ones(shape, dtype=torch.bool)
    kw = dict(gt_dilation=1, fp_dilation=0, percentile=50.0, smooth_sigma_vox=0.0, lr_axis=2)
    # a map that shows the used region beside the truth
    moved, sets = perturbation_deltas(model, x, w.clone(), gt, brain, 0.0, "classification", **kw)
    assert sets["fp"].sum() == used.sum() and not (sets["flip"] & used).any()
    assert moved["fp"].item() == pytest.approx(2.0 * used.sum().item())  # each used voxel: 2 → 0
    assert moved["flip"].item() == 0.0
    # a map whose off-target relevance is where the model reads nothing
    art = gt.double().clone()
    art[..., 14:17, 0:3, 0:3] = 1.0
    moved, sets = perturbation_deltas(model, x, art, gt, brain, 0.0, "classification", **kw)
    assert sets["fp"].any() and moved["fp"].item() == 0.0


def test_the_summary_tests_false_positives_against_the_control(tiny_protocol):
    proto = load_protocol(tiny_protocol)
    n = 12
    rows = {"subject_id": [str(i) for i in range(n)], "delta_fp": [1.0 + 0.1 * i for i in range(n)],
            "delta_flip": [0.1] * n, "fp_voxels": [10] * n, "flip_voxels": [10] * n, "overlap": [0.0] * n}
    s = summarize(rows, proto)
    assert s.used is True and s.p == pytest.approx(0.5 ** n) and s.n_with_fp == n
    assert s.difference_mean == pytest.approx(np.mean([0.9 + 0.1 * i for i in range(n)]))
    rows["delta_fp"] = rows["delta_flip"]
    s = summarize(rows, proto)
    assert s.used is False and s.p == 1.0
    rows["fp_voxels"] = [0] * n
    assert summarize(rows, proto).used is None


def test_a_run_reports_it_per_method(tiny_protocol, tmp_path):
    spec = yaml.safe_load(tiny_protocol.read_text())
    spec["sanity"]["fp_perturbation"] = {"enabled": True, "n_subjects": 6, "gt_dilation_mm": 8.0,
                                         "fp_dilation_mm": 0.0, "smooth_fwhm_mm": 8.0}
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(spec))
    res = run_protocol(load_protocol(p), tmp_path / "run")
    for m in res.results.methods:
        if m.is_baseline:
            assert m.off_target is None
        else:
            o = m.off_target
            assert o is not None and o.n == 6 and 0 <= o.n_with_fp <= 6
            assert o.delta_fp_mean is not None and o.delta_fp_mean >= 0
    assert 'id="off-target"' in (res.report_dir / "index.html").read_text()
    done = sorted((tmp_path / "run" / "stages" / "fp_perturbation").glob("*/DONE"))
    assert len(done) == 2  # gradient and smoothgrad on the one task
