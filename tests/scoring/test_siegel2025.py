"""``preset: siegel2025`` and the study's read-outs, against the study's own functions (numbers
stored in ``siegel2025_reference.json`` by ``benchmarks/study_reference.py --study``), nilearn,
scipy, numpy and the definition of rank-biased overlap."""
from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from nilearn.image import smooth_img
from scipy import ndimage

from neuroxai.errors import ConfigError
from neuroxai.scoring import score
from neuroxai.scoring.groundtruth import add_contralateral, binary_dilation
from neuroxai.scoring.localization import METRIC_INFO
from neuroxai.scoring.preprocess import apply_sign, gaussian_smooth, percentile, percentile_cutoff
from neuroxai.scoring.presets import SIEGEL2025
from neuroxai.scoring.siegel2025 import (false_positive, rank_biased_overlap, rank_biased_overlap_batch,
                                         region_match, region_percentiles)
from neuroxai.tasks.regions import lateral_pairs

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("siegel2025_reference.json")


def _study_reference():
    spec = importlib.util.spec_from_file_location("study_reference", ROOT / "benchmarks" / "study_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------------
# the study's own numbers
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_preset_equals_the_studys_functions_per_subject(device):
    """RMA (with and without the masker's re-smoothing), the false-positive test, strong/weak
    region match and the brain-age RBO of every subject: 4 method types × 4 maps."""
    mod = _study_reference()
    ref = json.loads(FIXTURE.read_text())
    cases = mod.make_cases()
    assert {t: cases["types"].count(t) for t in mod.TYPES} == {t: 4 for t in mod.TYPES}
    ours = mod.our_numbers(cases, ref["rbo_depth"], device=device)
    for key in ("rma", "rma_post", "fp", "strong", "weak", "rbo"):
        np.testing.assert_allclose(ours[key], ref[key], atol=1e-6, rtol=0, err_msg=key)
    # the fixture discriminates: both outcomes of each test occur, RMA spans its range
    for key in ("fp", "strong", "weak"):
        assert set(ref[key]) == {0.0, 1.0}, key
    assert min(ref["rma"]) < 0.1 and max(ref["rma"]) > 0.9
    assert ref["rma"] != ref["rma_post"]


def test_preset_steps_are_the_studys_and_each_one_is_needed():
    """Dropping any one step of the preset moves RMA away from the study's numbers."""
    mod = _study_reference()
    ref = json.loads(FIXTURE.read_text())
    cases = mod.make_cases()
    maps = torch.tensor(cases["maps"])[:, None]
    brain = torch.tensor(cases["brain"])[None, None]
    atl = torch.tensor(cases["atlases"])[:, None]
    pairs = mod.lateral_pairs(cases["names"])

    subjects = range(0, 16, 2)  # two of each type keep it fast

    def rma(**kw):
        out = []
        for i in subjects:
            groups = cases["targets"][i]
            labels = [g[0] for g in groups]
            mask = torch.isin(atl[i:i + 1], torch.tensor(labels))
            s = score(maps[i:i + 1], mask, ["relevance_mass_accuracy"], brain_mask=brain, preset="siegel2025",
                      atlas=atl[i:i + 1], true_region=labels, lateral_pairs=pairs, **kw)
            out.append(float(s["relevance_mass_accuracy"][0]))
        return np.array(out)

    want = np.array(ref["rma"])[list(subjects)]
    np.testing.assert_allclose(rma(), want, atol=1e-6)
    for kw in ({"contralateral": False}, {"gt_dilation": 0}, {"percentile": 0.0}, {"smooth_fwhm_vox": 0.0},
               {"sign": "square"}, {"smooth_kernel": "zero_pad", "smooth_fwhm_vox": 3.0}, {"mask_maps": False}):
        assert np.abs(rma(**kw) - want).max() > 1e-3, kw


# ----------------------------------------------------------------------------------------------
# each step against its reference
@pytest.mark.parametrize("fwhm,voxel", [(2.0, (1.0, 1.0, 1.0)), (4.0, (2.0, 2.0, 2.0)), (5.0, (2.0, 1.5, 3.0)),
                                        (30.0, (1.0, 1.0, 1.0))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nilearn_kernel_equals_smooth_img(fwhm, voxel, dtype):
    """``kernel="nilearn"`` is ``nilearn.image.smooth_img`` (truncate 4σ, reflect borders), in mm
    on an affine with voxel sizes ``voxel``; FWHM 30 voxels on a 9-voxel axis reflects more than
    once."""
    x = np.random.default_rng(1).standard_normal((9, 12, 7)).astype(dtype)
    ref = smooth_img(nib.Nifti1Image(x, np.diag([*voxel, 1.0])), fwhm).get_fdata()
    got = gaussian_smooth(torch.tensor(x)[None, None], fwhm, voxel, kernel="nilearn")[0, 0].double().numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 if dtype == np.float32 else 1e-12)


def test_voxel_fwhm_is_mm_fwhm_on_unit_spacing_and_differs_from_zero_padding():
    x = torch.zeros(1, 1, 9, 9, 9, dtype=torch.float64)
    x[0, 0, 0, 4, 4] = 1.0  # at the border: reflect keeps the mass, zero padding loses it
    a = gaussian_smooth(x, 2.0, kernel="nilearn")
    b = gaussian_smooth(x, 4.0, (2.0, 2.0, 2.0), kernel="nilearn")
    assert torch.equal(a, b)
    assert float(a.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(gaussian_smooth(x, 2.0).sum()) < 0.99


@pytest.mark.parametrize("iterations", [0, 1, 2, 3, 4, 5, 20])
def test_binary_dilation_equals_scipy(iterations):
    m = np.random.default_rng(2).random((2, 10, 11, 12)) > 0.98
    got = binary_dilation(torch.tensor(m)[:, None], iterations)[:, 0].numpy()
    ref = np.stack([ndimage.binary_dilation(v, iterations=iterations) if iterations else v for v in m])
    assert (got == ref).all()


def test_binary_dilation_is_six_connected():
    m = torch.zeros(1, 1, 5, 5, 5, dtype=torch.bool)
    m[0, 0, 2, 2, 2] = True
    assert int(binary_dilation(m, 1).sum()) == 7 and int(binary_dilation(m, 2).sum()) == 25
    with pytest.raises(ConfigError):
        binary_dilation(m, 1.5)


@pytest.mark.parametrize("q", [0.0, 1.0, 50.0, 80.0, 90.0, 95.0, 99.0, 99.9, 100.0])
def test_percentile_equals_numpy(q):
    rng = np.random.default_rng(3)
    v = rng.standard_normal((3, 1, 5, 6, 7))
    v[1] = np.round(v[1])  # ties
    valid = rng.random((3, 1, 5, 6, 7)) > 0.4
    np.testing.assert_allclose(percentile(torch.tensor(v), q).numpy(),
                               np.percentile(v.reshape(3, -1), q, axis=1), rtol=0, atol=1e-15)
    ref = [np.percentile(v[b][valid[b]], q) for b in range(3)]
    np.testing.assert_allclose(percentile(torch.tensor(v), q, torch.tensor(valid)).numpy(), ref, rtol=0, atol=1e-15)


def test_percentile_cutoff_keeps_values_at_or_above():
    x = torch.arange(1.0, 101.0).view(1, 1, 1, 10, 10)
    y = percentile_cutoff(x, 95.0)  # numpy: 95.05 → keeps 96…100
    assert torch.equal(y[y > 0], torch.arange(96.0, 101.0))
    y = percentile_cutoff(x, 0.0)
    assert torch.equal(y, x)  # the minimum is kept ("at or above")


def test_sign():
    x = torch.tensor([-2.0, 0.5, 3.0])
    assert apply_sign(x, "abs").tolist() == [2.0, 0.5, 3.0]
    assert apply_sign(x, "square").tolist() == [4.0, 0.25, 9.0]
    with pytest.raises(ConfigError):
        apply_sign(x, "positive")


def test_lateral_pairs_from_label_names():
    table = {"Hippocampus_L": 41, "Hippocampus_R": 42, "Vermis_1_2": 95, "Left-Putamen": 12, "Right-Putamen": 51,
             "ctx-lh-insula": 1035, "ctx-rh-insula": 2035, "Amygdala (left hemisphere)": 18,
             "Amygdala (right hemisphere)": 54, "Brain-Stem (whole brain)": 16}
    assert lateral_pairs(table) == {41: 42, 42: 41, 12: 51, 51: 12, 1035: 2035, 2035: 1035, 18: 54, 54: 18}


def test_aal3_pairs_cover_the_hippocampus():
    from neuroxai.data.cohort import atlas_labels

    pairs = lateral_pairs(atlas_labels())
    assert pairs[41] == 42 and pairs[42] == 41 and len(pairs) > 100


# ----------------------------------------------------------------------------------------------
# preset, overrides and ground truth
def _two_sided():
    """Left region 1, right region 2 (mirror), relevance only on the right."""
    atlas = torch.zeros(1, 1, 12, 6, 6, dtype=torch.long)
    atlas[0, 0, 2:4, 2:4, 2:4] = 1
    atlas[0, 0, 8:10, 2:4, 2:4] = 2
    attr = torch.where(atlas == 2, 1.0, 0.0)
    return attr, atlas == 1, atlas


def test_contralateral_counts_the_opposite_region_and_overrides_switch_it_off():
    attr, mask, atlas = _two_sided()
    kw = dict(atlas=atlas, true_region=[1], lateral_pairs={1: 2, 2: 1})
    on = score(attr, mask, ["relevance_mass_accuracy"], contralateral=True, **kw)
    off = score(attr, mask, ["relevance_mass_accuracy"], **kw)
    assert float(on["relevance_mass_accuracy"][0]) == 1.0 and float(off["relevance_mass_accuracy"][0]) == 0.0
    # the preset turns it on; overriding turns it off again
    pre = score(attr, mask, ["relevance_mass_accuracy"], preset="siegel2025", **kw)
    assert float(pre["relevance_mass_accuracy"][0]) == pytest.approx(1.0)
    pre_off = score(attr, mask, ["relevance_mass_accuracy"], preset="siegel2025", contralateral=False,
                    gt_dilation=0, **kw)
    assert float(pre_off["relevance_mass_accuracy"][0]) < 0.05
    m = add_contralateral(mask, atlas, [1], {1: 2})
    assert torch.equal(m, atlas > 0)


def test_gt_dilation_widens_the_ground_truth_by_iterations():
    attr = torch.zeros(1, 1, 11, 11, 11)
    attr[0, 0, 5, 5, 8] = 1.0  # three voxels off the region along w
    mask = torch.zeros_like(attr, dtype=torch.bool)
    mask[0, 0, 5, 5, 5] = True
    rma = [float(score(attr, mask, ["relevance_mass_accuracy"], gt_dilation=n)["relevance_mass_accuracy"][0])
           for n in (2, 3)]
    assert rma == [0.0, 1.0]
    mm = score(attr, mask, ["relevance_mass_accuracy"], gt_dilation_mm=3.0)["relevance_mass_accuracy"]
    assert float(mm[0]) == 1.0


def test_unknown_preset_is_a_config_error():
    attr, mask, _ = _two_sided()
    with pytest.raises(ConfigError, match="preset"):
        score(attr, mask, ["auroc"], preset="siegel2024")


def test_scoring_spec_preset_and_overrides():
    from neuroxai.protocol.schema import ScoringSpec

    sc = ScoringSpec.model_validate({"preset": "siegel2025"})
    for k, v in SIEGEL2025.items():
        assert getattr(sc, k) == v, k
    sc = ScoringSpec.model_validate({"preset": "siegel2025", "gt_dilation": 0, "contralateral": False})
    assert sc.gt_dilation == 0 and sc.contralateral is False and sc.sign == "abs"
    assert ScoringSpec().sign is None and ScoringSpec().gt_dilation == 0
    with pytest.raises(Exception, match="preset"):
        ScoringSpec.model_validate({"preset": "nope"})


# ----------------------------------------------------------------------------------------------
# false positives
def test_false_positive_definition():
    attr = torch.zeros(1, 1, 1, 1, 12, dtype=torch.float64)
    attr[..., :4] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = torch.zeros_like(attr, dtype=torch.bool)
    mask[..., :4] = True
    valid = torch.ones_like(mask)
    # threshold = np.percentile([1, 2, 3, 4, 0, 0 …inside], 99); outside all 0 → no false positive
    fp, _ = false_positive(attr, mask, valid, gt_dilation=0)
    assert float(fp[0]) == 0.0
    attr[..., 10] = float(np.percentile([1.0, 2.0, 3.0, 4.0], 99)) + 1e-9
    assert float(false_positive(attr, mask, valid, gt_dilation=0)[0][0]) == 1.0
    # dilating by 6 iterations takes voxel 10 inside: no outside voxel left, no false positive
    assert float(false_positive(attr, mask, valid, gt_dilation=7)[0][0]) == 0.0
    assert METRIC_INFO["false_positive"].own_dilation and not METRIC_INFO["false_positive"].higher_is_better


def test_false_positive_gets_the_ground_truth_before_the_scorings_dilation():
    attr = torch.zeros(1, 1, 1, 1, 12)
    attr[..., 0] = 1.0
    attr[..., 3] = 5.0  # 3 voxels from the region
    mask = torch.zeros_like(attr, dtype=torch.bool)
    mask[..., 0] = True
    s = score(attr, mask, {"false_positive": {"gt_dilation": 2}}, gt_dilation=3)
    assert float(s["false_positive"][0]) == 1.0  # its own 2 iterations, not 3 + 2


def test_false_positive_chance_matches_simulation():
    """f = 0 (percentile 50 of 5 inside voxels): chance = 1 − C(5, 3) / C(12, 3)."""
    g = torch.Generator().manual_seed(0)
    attr = torch.rand(20000, 1, 1, 1, 12, generator=g, dtype=torch.float64)
    mask = torch.zeros_like(attr, dtype=torch.bool)
    mask[..., :5] = True
    fp, ch = false_positive(attr, mask, torch.ones_like(mask), gt_dilation=0, percentile=50.0)
    expect = 1 - math.comb(5, 3) / math.comb(12, 3)
    assert float(ch[0]) == pytest.approx(expect, abs=1e-12)
    assert abs(float(fp.mean()) - expect) < 4 * math.sqrt(expect * (1 - expect) / 20000)


# ----------------------------------------------------------------------------------------------
# region match
def _regions(values, labels=None):
    """A 1-D 'brain' of regions of 4 voxels, region r's voxels all equal to values[r]."""
    labels = labels or list(range(1, len(values) + 1))
    atlas = torch.tensor([lab for lab in labels for _ in range(4)]).view(1, 1, 1, 1, -1)
    attr = torch.tensor([v for v in values for _ in range(4)], dtype=torch.float64).view(1, 1, 1, 1, -1)
    return attr, atlas, torch.ones_like(atlas, dtype=torch.bool)


def test_region_percentiles_equal_numpy():
    rng = np.random.default_rng(4)
    atlas = torch.tensor(rng.integers(0, 6, (2, 1, 4, 5, 6)))
    attr = torch.tensor(rng.standard_normal((2, 1, 4, 5, 6)))
    valid = torch.tensor(rng.random((2, 1, 4, 5, 6)) > 0.2)
    got = region_percentiles(attr, atlas, valid, 99.0)
    for b in range(2):
        for lab in range(1, 6):
            v = attr[b][(atlas[b] == lab) & valid[b]].numpy()
            assert float(got[b, lab]) == pytest.approx(float(np.percentile(v, 99)), abs=1e-15)
    assert got[:, 0].isnan().all()


def test_region_match_strong_weak_lateral_and_ties():
    # regions 1..6; pairs 1↔2, 3↔4; target 1
    attr, atlas, valid = _regions([0.5, 0.9, 0.7, 0.1, 0.6, 0.0])
    pairs = {1: 2, 2: 1, 3: 4, 4: 3}
    s, _, ex = region_match(attr, None, valid, atlas=atlas, true_region=[1], lateral_pairs=pairs)
    # separate: ranking 2, 3, 5, 1 → not top-1 nor top-3 (the study's check_true_positive)
    assert float(s[0]) == 0.0 and float(ex["region_match_weak"][0][0]) == 0.0
    s, _, ex = region_match(attr, None, valid, atlas=atlas, true_region=[1], lateral_pairs=pairs, lateral="merged")
    assert float(s[0]) == 1.0 and float(ex["region_match_weak"][0][0]) == 1.0  # {1,2} scores 0.9
    # two targets: top 2 must both be targets, top 6 must hold each
    s, _, ex = region_match(attr, None, valid, atlas=atlas, targets=[[2], [3]])
    assert float(s[0]) == 1.0
    s, _, ex = region_match(attr, None, valid, atlas=atlas, targets=[[2], [1]])
    assert float(s[0]) == 0.0 and float(ex["region_match_weak"][0][0]) == 1.0
    # a target tied with a non-target ranks after it
    attr, atlas, valid = _regions([0.0, 0.0, 0.0, 1.0])
    s, _, ex = region_match(attr, None, valid, atlas=atlas, true_region=[1])
    assert float(s[0]) == 0.0 and float(ex["region_match_weak"][0][0]) == 0.0


def test_region_match_chance_is_the_random_ranking_probability():
    """Chance equals the share of all region orders that match (enumerated)."""
    R = 7
    attr, atlas, valid = _regions([0.1 * i for i in range(R)])
    for targets in ([[3]], [[3], [5]], [[3, 4], [6]]):
        _, ch, ex = region_match(attr, None, valid, atlas=atlas, targets=targets)
        T = len(targets)
        union = {x for g in targets for x in g}
        strong = weak = 0
        perms = list(itertools.permutations(range(1, R + 1)))
        for order in perms:
            strong += all(x in union for x in order[:T])
            weak += all(any(x in g for x in order[:3 * T]) for g in targets)
        assert float(ch[0]) == pytest.approx(strong / len(perms), abs=1e-12), targets
        assert float(ex["region_match_weak"][1][0]) == pytest.approx(weak / len(perms), abs=1e-12), targets


def test_region_match_batched_equals_one_by_one():
    mod = _study_reference()
    cases = mod.make_cases()
    maps = torch.tensor(cases["maps"])[:, None]
    brain = torch.tensor(cases["brain"])[None, None]
    atl = torch.tensor(cases["atlases"])[:, None]
    pairs = mod.lateral_pairs(cases["names"])
    mask = torch.isin(atl, torch.tensor([5]))
    metrics = {"region_match": {"atlas": atl, "true_region": [5]}, "false_positive": {"gt_dilation": 3},
               "relevance_mass_accuracy": {}}
    kw = dict(brain_mask=brain, preset="siegel2025", atlas=atl, true_region=[5], lateral_pairs=pairs)
    whole = score(maps, mask, metrics, **kw)
    for i in range(0, 16, 5):
        one = score(maps[i:i + 1], mask[i:i + 1], {**metrics, "region_match": {"atlas": atl[i:i + 1], "true_region": [5]}},
                    **{**kw, "atlas": atl[i:i + 1]})
        for k in ("region_match", "region_match_weak", "false_positive", "relevance_mass_accuracy"):
            assert float(whole[k][i]) == pytest.approx(float(one[k][0]), abs=1e-12), (k, i)


# ----------------------------------------------------------------------------------------------
# rank-biased overlap
def test_rbo_by_hand():
    """S = a b c d, T = b a c e: A_1 = 0, A_2 = 1, A_3 = 1, A_4 = 3/4 (Webber et al. 2010)."""
    s, t = list("abcd"), list("bace")
    assert rank_biased_overlap(s, t) == pytest.approx((0 + 1 + 1 + 0.75) / 4)  # p = 1: average overlap
    # p = 0.5: (1 − p) Σ p^(d−1) A_d, and the extrapolation adds A_4 p^4 (eq. 32)
    assert rank_biased_overlap(s, t, p=0.5) == pytest.approx(0.5 * (0.5 * 1 + 0.25 * 1 + 0.125 * 0.75))
    assert rank_biased_overlap(s, t, p=0.5, ext=True) == pytest.approx(0.421875 + 0.75 / 16)
    assert rank_biased_overlap(s, s, p=0.9, ext=True) == pytest.approx(1.0)
    assert rank_biased_overlap(s, list("wxyz")) == 0.0
    assert rank_biased_overlap(s, list("ba")) == pytest.approx((0 + 1) / 2)  # depth 2: A_1 = 0, A_2 = 1
    assert rank_biased_overlap([], []) == 1.0 and rank_biased_overlap(["a"], []) == 0.0


def test_rbo_batch_equals_lists():
    rng = np.random.default_rng(5)
    ranked = torch.tensor(np.stack([rng.permutation(12)[:8] for _ in range(5)]))
    ref = torch.tensor(rng.permutation(12)[:8])
    got = rank_biased_overlap_batch(ranked, ref, p=0.8)
    for b in range(5):
        assert float(got[b]) == pytest.approx(rank_biased_overlap(ranked[b].tolist(), ref.tolist(), p=0.8), abs=1e-15)


def test_false_positive_norm_runs_from_chance_to_none():
    """Its perfect score is 0: norm = (fp − chance) / (0 − chance), 1 without a false positive."""
    attr = torch.zeros(2, 1, 1, 1, 12)
    attr[:, ..., 0] = 1.0
    attr[1, ..., 9] = 2.0
    mask = torch.zeros_like(attr, dtype=torch.bool)
    mask[..., :2] = True
    s = score(attr, mask, {"false_positive": {"gt_dilation": 0}})
    assert s["false_positive"].tolist() == [0.0, 1.0]
    ch = s["false_positive_chance"]
    assert s["false_positive_norm"].tolist() == pytest.approx([1.0, float((1 - ch[1]) / (0 - ch[1]))])
