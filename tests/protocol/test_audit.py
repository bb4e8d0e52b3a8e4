"""`neuroxai audit`: a prior study's saved maps, on their own grids and layouts, get the same kind of
verdicts and report as `validate`."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import map_coordinates
from typer.testing import CliRunner

from neuroxai.cli import app
from neuroxai.errors import ConfigError, ManifestError, ScoringError
from neuroxai.data.spaces import read_transform
from neuroxai.protocol.audit import run_audit
from neuroxai.report.schema import SCHEMA_VERSION, read_results

runner = CliRunner()
N = 12


def _fast():
    """audit.yaml with the sign-flip permutation test and fewer bootstrap draws (scipy's Wilcoxon
    falls back to an exhaustive permutation on tied scores: seconds per call at n = 12)."""
    from neuroxai.protocol.schema import load_protocol

    p = load_protocol("audit")
    return p.model_copy(update={"statistics": p.statistics.model_copy(update={"test": "permutation",
                                                                               "bootstrap": 500})})


FAST = _fast()

# 1 mm masks on a 24³ grid; 2 mm maps on a 16³ grid covering it (same world space, MNI-like offsets).
A1 = np.array([[1.0, 0, 0, -12], [0, 1, 0, -14], [0, 0, 1, -10], [0, 0, 0, 1]])
A2 = np.array([[2.0, 0, 0, -16], [0, 2, 0, -18], [0, 0, 2, -14], [0, 0, 0, 1]])


def _mask(i: int) -> np.ndarray:
    m = np.zeros((24, 24, 24), np.uint8)
    m[6 + i % 4:12 + i % 4, 8:14, 9 + i % 3:15 + i % 3] = 1
    return m


def _map_2mm(i: int, kind: str, rng) -> np.ndarray:
    """A 2 mm map: 'good' peaks on the subject's 1 mm mask (with noise), 'noise' is noise."""
    if kind == "noise":
        return rng.random((16, 16, 16)).astype(np.float32)
    # world centre of the mask -> 2 mm voxel coordinates
    c1 = np.argwhere(_mask(i)).mean(0)
    w = A1 @ np.r_[c1, 1.0]
    c2 = (np.linalg.inv(A2) @ w)[:3]
    g = np.indices((16, 16, 16)).transpose(1, 2, 3, 0)
    return (np.exp(-((g - c2) ** 2).sum(-1) / 4.0) + 0.05 * rng.random((16, 16, 16))).astype(np.float32)


def _save(arr, aff, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, aff), path)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Maps at 2 mm (per-method folders) and masks at 1 mm, in the same world space."""
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    for i in range(N):
        _save(_mask(i), A1, root / "masks" / f"sub-{i:02d}_mask.nii.gz")
        for kind in ("good", "noise"):
            _save(_map_2mm(i, kind, rng), A2, root / "maps" / kind / f"sub-{i:02d}_map.nii.gz")
    return root


def _scores(res) -> dict:
    sc = res.results.scores
    return {(s, m, k): v for s, m, k, v in zip(sc["subject_id"], sc["method"], sc["metric"], sc["value"])}


def test_maps_at_2mm_against_masks_at_1mm_equal_a_hand_resampled_audit(study, tmp_path):
    res = run_audit(study / "maps", study / "masks", tmp_path / "a", report=False, protocol=FAST)
    # by hand: trilinear resampling of every map onto its 1 mm mask grid (scipy, not our code)
    vox = np.linalg.inv(A2) @ A1
    idx = np.indices((24, 24, 24)).reshape(3, -1)
    coords = (vox[:3, :3] @ idx + vox[:3, 3:4])
    for kind in ("good", "noise"):
        for f in (study / "maps" / kind).iterdir():
            a = np.asarray(nib.load(f).dataobj, dtype=np.float64)
            r = map_coordinates(a, coords, order=1, mode="nearest").reshape(24, 24, 24).astype(np.float32)
            _save(r, A1, tmp_path / "hand" / kind / f.name)
    hand = run_audit(tmp_path / "hand", study / "masks", tmp_path / "b", report=False, protocol=FAST)
    a, b = _scores(res), _scores(hand)
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-5), k
    assert res.results.data.grid["n_maps_resampled"] == 2 * N
    assert hand.results.data.grid["n_maps_resampled"] == 0
    v = {m.method: m.verdict for m in res.results.methods}
    assert v == {"good": "PASS", "noise": "FAIL", "random": "FAIL", "oracle": "PASS"}


def test_on_the_map_grid_masks_are_resampled_by_nearest_neighbour(study, tmp_path):
    res = run_audit(study / "maps", study / "masks", tmp_path / "a", grid="map", report=False, protocol=FAST)
    # by hand: each 1 mm mask sampled at the 2 mm voxel centres (nearest)
    vox = np.linalg.inv(A1) @ A2
    idx = np.indices((16, 16, 16)).reshape(3, -1)
    c = np.rint(vox[:3, :3] @ idx + vox[:3, 3:4]).astype(int)
    for i in range(N):
        ok = ((c >= 0) & (c < 24)).all(0)
        m = np.zeros(idx.shape[1], np.uint8)
        m[ok] = _mask(i)[tuple(c[:, ok])]
        _save(m.reshape(16, 16, 16), A2, tmp_path / "masks2" / f"sub-{i:02d}_mask.nii.gz")
    hand = run_audit(study / "maps", tmp_path / "masks2", tmp_path / "b", report=False, protocol=FAST)
    a, b = _scores(res), _scores(hand)
    assert {k: v for k, v in a.items() if k[1] != "random"} == pytest.approx(
        {k: v for k, v in b.items() if k[1] != "random"}, abs=1e-6)


def test_bids_derivatives_layout_equals_the_per_method_layout(study, tmp_path):
    bids = tmp_path / "bids" / "derivatives"
    for kind in ("good", "noise"):
        for f in (study / "maps" / kind).iterdir():
            sub = f.name.split("_")[0]
            dst = bids / "xai" / sub / "anat" / f"{sub}_space-MNI152_desc-{kind}_saliency.nii.gz"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst)
    (bids / "xai" / "dataset_description.json").write_text("{}")
    for f in (study / "masks").iterdir():
        sub = f.name.split("_")[0]
        seg = np.asarray(nib.load(f).dataobj).astype(np.int16) * 17  # label 17 = the target
        seg[0:3] = 2                                                   # another label elsewhere
        _save(seg, A1, bids / "seg" / sub / "anat" / f"{sub}_dseg.nii.gz")
        dst = bids / "lesions" / sub / "anat" / f"{sub}_desc-lesion_mask.nii.gz"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    ref = _scores(run_audit(study / "maps", study / "masks", tmp_path / "ref", report=False, protocol=FAST))
    b1 = run_audit(bids / "xai", bids / "lesions", tmp_path / "b1", report=False, protocol=FAST)
    b2 = run_audit(bids / "xai", bids / "seg", tmp_path / "b2", labels=[17], report=False, protocol=FAST)
    assert b1.results.audit.maps_layout == "bids" and b2.results.audit.mask_kind == "dseg"
    assert _scores(b1) == pytest.approx(ref) and _scores(b2) == pytest.approx(ref)
    with pytest.raises(ManifestError, match="only segmentations"):
        run_audit(bids / "xai", bids / "seg", tmp_path / "b3", report=False, protocol=FAST)


def test_probabilistic_mask_with_a_threshold(study, tmp_path):
    _prob_and_core(study, tmp_path)
    hi = run_audit(study / "maps", tmp_path / "prob", tmp_path / "hi", mask_threshold=0.6, report=False, protocol=FAST)
    lo = run_audit(study / "maps", tmp_path / "prob", tmp_path / "lo", mask_threshold=0.3, report=False, protocol=FAST)
    assert _scores(hi) == pytest.approx(_scores(run_audit(study / "maps", tmp_path / "core", tmp_path / "c",
                                                          report=False, protocol=FAST)))
    assert _scores(lo) == pytest.approx(_scores(run_audit(study / "maps", study / "masks", tmp_path / "m",
                                                          report=False, protocol=FAST)))
    assert hi.results.data.grid["mask_threshold"] == 0.6


@pytest.mark.parametrize("where", ["beside", "nested", "not_nifti"])
def test_a_file_that_fits_no_layout_is_a_named_error(study, tmp_path, where):
    maps = tmp_path / "maps"
    shutil.copytree(study / "maps", maps)
    stray = {"beside": maps / "sub-00_extra.nii.gz", "nested": maps / "good" / "old" / "sub-00_map.nii.gz",
             "not_nifti": maps / "good" / "sub-00_map.mgz"}[where]
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"x")
    with pytest.raises(ManifestError, match="fit no layout") as e:
        run_audit(maps, study / "masks", tmp_path / "out", report=False, protocol=FAST)
    assert stray.name in str(e.value)


def test_map_without_mask_and_non_overlapping_extents(study, tmp_path):
    maps = tmp_path / "maps"
    shutil.copytree(study / "maps", maps)
    _save(np.ones((16, 16, 16), np.float32), A2, maps / "good" / "sub-99_map.nii.gz")
    with pytest.raises(ManifestError, match="sub-99"):
        run_audit(maps, study / "masks", tmp_path / "o1", report=False, protocol=FAST)
    far = A2.copy()
    far[:3, 3] += [300, 0, 0]
    shutil.rmtree(maps)
    for kind in ("good",):
        for f in (study / "maps" / kind).iterdir():
            _save(np.asarray(nib.load(f).dataobj), far, maps / kind / f.name)
    with pytest.raises(ScoringError, match="do not overlap") as e:
        run_audit(maps, study / "masks", tmp_path / "o2", report=False, protocol=FAST)
    assert "mm apart" in str(e.value)


def test_a_transform_brings_shifted_maps_back(study, tmp_path):
    shift = np.array([7.0, -5.0, 3.0])
    moved = A2.copy()
    moved[:3, 3] += shift  # the maps' world = mask world + shift
    for kind in ("good", "noise"):
        for f in (study / "maps" / kind).iterdir():
            _save(np.asarray(nib.load(f).dataobj), moved, tmp_path / "maps" / kind / f.name)
    t = np.eye(4)
    t[:3, 3] = shift  # mask world -> map world
    np.savetxt(tmp_path / "t.txt", t)
    itk = tmp_path / "t_itk.txt"  # the same transform as ITK writes it (LPS: x and y negated)
    itk.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
                   f"Parameters: 1 0 0 0 1 0 0 0 1 {-shift[0]} {-shift[1]} {shift[2]}\nFixedParameters: 0 0 0\n")
    np.testing.assert_allclose(read_transform(itk), t, atol=1e-12)
    ref = _scores(run_audit(study / "maps", study / "masks", tmp_path / "ref", report=False, protocol=FAST))
    got = _scores(run_audit(tmp_path / "maps", study / "masks", tmp_path / "t", transform=tmp_path / "t.txt",
                            report=False, protocol=FAST))
    assert got == pytest.approx(ref, abs=1e-5)
    with pytest.raises(ConfigError, match="4×4"):
        (tmp_path / "bad.txt").write_text("1 2 3\n")
        read_transform(tmp_path / "bad.txt")


def test_constant_and_zero_maps_are_flagged(study, tmp_path):
    maps = tmp_path / "maps"
    shutil.copytree(study / "maps", maps)
    _save(np.zeros((16, 16, 16), np.float32), A2, maps / "good" / "sub-03_map.nii.gz")
    _save(np.full((16, 16, 16), 2.5, np.float32), A2, maps / "noise" / "sub-04_map.nii.gz")
    res = run_audit(maps, study / "masks", tmp_path / "out", protocol=FAST)
    flags = {(f.method, f.subject_id, f.flag) for f in res.results.audit.flags}
    assert flags == {("good", "sub-03", "all-zero map"), ("noise", "sub-04", "constant map (2.5)")}
    html = (res.report_dir / "index.html").read_text()
    assert 'id="flags"' in html and "sub-03" in html and "all-zero map" in html


def test_audit_report_is_the_validate_report_with_no_model_parts(study, tmp_path):
    code = runner.invoke(app, ["audit", "--maps", str(study / "maps"), "--masks", str(study / "masks"),
                               "--out", str(tmp_path / "out"), "--quiet"]).exit_code
    assert code == 1  # the noise maps FAIL
    res = read_results(tmp_path / "out" / "results.json")
    assert res.kind == "audit" and res.schema_version == SCHEMA_VERSION == "1.7"
    html = (tmp_path / "out" / "report" / "index.html").read_text()
    for part in ('id="verdicts"', 'id="audit-kind"', 'id="audit-inputs"', "not applicable: no model",
                 'id="validity"', "distance"):
        assert part in html, part
    assert (tmp_path / "out" / "report" / "scores.csv").read_text().startswith("task,subject_id,method,metric,value")
    assert (tmp_path / "out" / "inputs.csv").read_text().count("\n") == 3 * N + 1  # 2 maps + 1 mask per subject
    crit = {c.kind: c for c in res.method("audit", "good").criteria}
    assert set(crit) == {"scaled_ci_above", "beats_random"}  # audit.yaml: the model-free criteria
    # paired comparison between the methods under test: two-sided, equal to scipy's Wilcoxon
    from scipy.stats import wilcoxon

    (pw,) = res.task("audit").pairwise
    sc = res.scores
    val = {(s, m): v for s, m, k, v in zip(sc["subject_id"], sc["method"], sc["metric"], sc["value"])
           if k == "relevance_rank_accuracy"}
    subs = sorted({s for s, _ in val})
    x, y = (np.array([val[(s, m)] for s in subs]) for m in ("good", "noise"))
    assert (pw.a, pw.b, pw.reading) == ("good", "noise", "good better")
    assert pw.p == pytest.approx(wilcoxon(x, y, alternative="two-sided").pvalue, rel=1e-6)
    assert pw.mean_difference == pytest.approx(float((x - y).mean()))
    assert 'id="pairwise-audit"' in html
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert chrome, "headless chromium is needed for this test (.ci/run installs it)"
    png = tmp_path / "shot.png"
    subprocess.run([chrome, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                    "--window-size=1280,2400", (tmp_path / "out" / "report" / "index.html").as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    a = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert a.std() > 10  # a rendered page, not a blank one


def test_an_audit_protocol_is_refused_by_validate_and_a_validate_protocol_works_for_audit(study, tmp_path):
    from neuroxai.protocol.runner import run_protocol

    with pytest.raises(ConfigError, match="audit protocol"):
        run_protocol("audit", tmp_path / "v")
    res = run_audit(study / "maps", study / "masks", tmp_path / "q", protocol="quick", report=False)
    crit = {c.kind: c for c in res.results.method("audit", "good").criteria}
    assert not crit["beats_null_model"].applicable and "no model" in crit["beats_null_model"].text
    assert not crit["model_randomization"].applicable
    assert {m.method for m in res.results.methods} == {"good", "noise", "random", "oracle"}


EXPORT_PROTOCOL = """
id: export-test
version: "0.1"
data: {source: embedded, cohort: {n: 40, spacing_mm: 8.0, seed: 0}}
tasks:
  - id: pos_ctrl
    type: positive_control
    params: {region: [Hippocampus_L, Hippocampus_R], strength: 3.0, split: [0.5, 0.1, 0.4]}
    null_control: false
model: {architecture: small_cnn, params: {channels: [4, 8]}, training: {epochs: 8, batch_size: 8, lr: 0.003, seed: 0}}
methods:
  - name: gradient
  - name: random
    params: {seed: 0}
  - name: oracle
metrics:
  - name: relevance_rank_accuracy
  - name: relevance_mass_accuracy
scoring: {polarity: positive, restrict_to_brain: true}
statistics: {bootstrap: 500, test: permutation, seed: 0}
sanity: {model_randomization: {enabled: false}}
validity: {enabled: false}
acceptance:
  - {kind: scaled_ci_above, metric: relevance_rank_accuracy, threshold: 0.1}
  - {kind: beats_random, metric: relevance_rank_accuracy, alpha: 0.01}
run: {device: cpu, batch_size: 4, save_maps: npz16, seed: 0}
"""


def test_a_runs_exported_maps_audit_to_the_same_scores_and_verdicts(tmp_path):
    from neuroxai.protocol.runner import run_protocol
    from neuroxai.protocol.schema import load_protocol

    p = tmp_path / "p.yaml"
    p.write_text(EXPORT_PROTOCOL)
    val = run_protocol(p, tmp_path / "run", report=False, export=tmp_path / "study")
    deriv = tmp_path / "study" / "derivatives"
    maps = sorted((deriv / "xai-posctrl").rglob("*_saliency.nii.gz"))
    assert {m.name.split("_desc-")[1] for m in maps} == {"gradient_saliency.nii.gz"}  # no baselines exported
    proto = load_protocol(p)
    aud = run_audit(deriv / "xai-posctrl", deriv / "groundtruth-posctrl", tmp_path / "audit",
                    protocol=proto.model_copy(update={"kind": "audit", "tasks": []}),
                    brain_mask=deriv / "brain", report=False)
    v = {m.method: m for m in val.results.methods}
    a = {m.method: m for m in aud.results.methods}
    for met in ("relevance_rank_accuracy", "relevance_mass_accuracy"):
        for key in ("gradient", "oracle"):  # maps saved as float16: equal to a few 1e-3
            assert a[key].metrics[met].mean == pytest.approx(v[key].metrics[met].mean, abs=5e-3), (key, met)
    assert not val.results.task("pos_ctrl").model.at_chance
    assert {k: m.verdict for k, m in a.items()} == {k: m.verdict for k, m in v.items()}


def test_an_atlas_adds_region_ranking_and_an_anatomical_image_the_figures(study, tmp_path):
    atlas = np.ones((24, 24, 24), np.int16)          # label 1 everywhere …
    atlas[12:, :, :] = 2
    atlas[:, 12:, :] += 2                             # … four quadrants 1-4 …
    atlas[5:17, 7:15, 8:18] = 5                       # … and the region that holds every mask
    _save(atlas, A1, tmp_path / "atlas.nii.gz")
    (tmp_path / "labels.tsv").write_text("index\tname\n1\tA\n2\tB\n3\tC\n4\tD\n5\tHippo\n")
    anat = np.random.default_rng(1).random((24, 24, 24)).astype(np.float32)
    _save(anat, A1, tmp_path / "t1.nii.gz")
    res = run_audit(study / "maps", study / "masks", tmp_path / "out", atlas=tmp_path / "atlas.nii.gz",
                    atlas_labels=tmp_path / "labels.tsv", anat=tmp_path / "t1.nii.gz", protocol=FAST)
    m = {x.method: x.metrics for x in res.results.methods}
    assert m["good"]["region_rank"].mean == 1.0 and m["oracle"]["region_rank"].mean == 1.0
    assert m["good"]["region_rank"].chance == pytest.approx(3.0)  # (R + 1) / 2 with R = 5 regions
    assert res.results.audit.atlas.true_regions == {"Hippo": N}
    given = run_audit(study / "maps", study / "masks", tmp_path / "out2", atlas=tmp_path / "atlas.nii.gz",
                      atlas_labels=tmp_path / "labels.tsv", true_region=["Hippo"], protocol=FAST, report=False)
    assert _scores(given) == pytest.approx(_scores(res))
    assert res.results.audit.figures_background == "anatomical image"
    html = (res.report_dir / "index.html").read_text()
    assert "Hippo: 12 subjects" in html and "region_rank" in html
    with pytest.raises(ConfigError, match="unknown region"):
        run_audit(study / "maps", study / "masks", tmp_path / "out3", atlas=tmp_path / "atlas.nii.gz",
                  atlas_labels=tmp_path / "labels.tsv", true_region=["Amygdala"], protocol=FAST)


def test_saved_nifti_maps_of_a_label_with_an_underscore_audit_as_that_method(tmp_path):
    """`save_maps: nifti` and `--export` write the name the BIDS layout reads: a method key with
    characters a BIDS label cannot hold (``lrp_eps``) becomes ``desc-lrpeps``, not an unmatched file."""
    import torch

    from neuroxai.data.bids import discover_maps
    from neuroxai.protocol.stages.attribute import save_nifti_maps

    d = tmp_path / "derivatives" / "xai" / "sub-01" / "anat"
    save_nifti_maps(d, ["sub-01"], torch.rand(1, 1, 4, 4, 4), torch.eye(4)[None], "lrp_eps")
    layout, maps = discover_maps(tmp_path / "derivatives" / "xai")
    assert layout == "bids" and list(maps) == ["lrpeps"] and list(maps["lrpeps"]) == ["sub-01"]


def _prob_and_core(study, tmp_path):
    """Probabilistic masks (0.4 on the mask, 0.9 in its core) and the core alone as binary masks."""
    for f in (study / "masks").iterdir():
        m = np.asarray(nib.load(f).dataobj).astype(np.float32)
        core = np.zeros_like(m)
        core[tuple(slice(int(a.min()) + 2, int(a.max()) - 1) for a in np.nonzero(m))] = 1
        _save((0.4 * m + 0.5 * core).astype(np.float32), A1, tmp_path / "prob" / f.name)
        _save(core.astype(np.uint8), A1, tmp_path / "core" / f.name)
    return tmp_path / "prob", tmp_path / "core"


def test_an_audit_honours_the_protocol_s_mask_threshold_and_the_flag_overrides_it(study, tmp_path):
    prob, core = _prob_and_core(study, tmp_path)  # 0.4 on the mask, 0.9 in its core
    full = {k: v for k, v in _scores(run_audit(study / "maps", study / "masks", tmp_path / "m", protocol=FAST,
                                               report=False)).items() if k[1] in ("good", "noise")}
    only_core = {k: v for k, v in _scores(run_audit(study / "maps", core, tmp_path / "c", protocol=FAST,
                                                    report=False)).items() if k[1] in ("good", "noise")}
    assert full != pytest.approx(only_core)  # the two thresholds below give different ground truths
    at_03 = FAST.model_copy(update={"data": FAST.data.model_copy(update={"mask_threshold": 0.3})})
    res = run_audit(study / "maps", prob, tmp_path / "p", protocol=at_03, report=False)
    assert {k: v for k, v in _scores(res).items() if k[1] in ("good", "noise")} == pytest.approx(full)
    assert res.results.data.grid["mask_threshold"] == 0.3  # not the default 0.5 (the core only)
    # the same protocol as a file, through the command line; --mask-threshold overrides it
    y = tmp_path / "audit03.yaml"
    y.write_text((Path(__import__("neuroxai").__file__).parent / "protocols" / "audit.yaml").read_text()
                 + "data: {mask_threshold: 0.3}\n")
    for flag, out, want in (([], "cli_p", full), (["--mask-threshold", "0.6"], "cli_o", only_core)):
        runner.invoke(app, ["audit", "--maps", str(study / "maps"), "--masks", str(prob), "--protocol", str(y),
                            "--out", str(tmp_path / out), "--quiet", *flag])
        r = read_results(tmp_path / out / "results.json")
        got = {(s, m, k): v for s, m, k, v in zip(*(r.scores[c] for c in ("subject_id", "method", "metric", "value")))
               if m in ("good", "noise")}
        assert r.data.grid["mask_threshold"] == (0.6 if flag else 0.3)
        assert got == pytest.approx(want)


def test_contralateral_in_an_audit_adds_the_paired_region_named_in_the_labels_table(tmp_path):
    """``scoring.contralateral`` with an atlas whose labels table names left and right: the ground
    truth is the subject's mask plus the counterpart region (as the validate path builds it from the
    segmentation's labels), equal to auditing masks that hold both regions."""
    aff = np.eye(4)
    atlas = np.full((16, 16, 16), 3, np.int16)
    atlas[2:7, 4:12, 4:12] = 1     # Hippocampus_L
    atlas[9:14, 4:12, 4:12] = 2    # Hippocampus_R
    _save(atlas, aff, tmp_path / "atlas.nii.gz")
    (tmp_path / "labels.tsv").write_text("index\tname\n1\tHippocampus_L\n2\tHippocampus_R\n3\tRest\n")
    rng = np.random.default_rng(0)
    for i in range(8):
        m = np.zeros((16, 16, 16), np.uint8)
        m[3:6, 5 + i % 3:9 + i % 3, 6:10] = 1  # inside the left region
        _save(m, aff, tmp_path / "masks" / f"sub-{i:02d}_mask.nii.gz")
        _save(m | (atlas == 2), aff, tmp_path / "both" / f"sub-{i:02d}_mask.nii.gz")
        _save(((atlas == 2) + 0.01 * rng.random(atlas.shape)).astype(np.float32), aff,
              tmp_path / "maps" / "right" / f"sub-{i:02d}_map.nii.gz")
        _save(rng.random(atlas.shape).astype(np.float32), aff, tmp_path / "maps" / "noise" / f"sub-{i:02d}_map.nii.gz")
    contra = FAST.model_copy(update={"scoring": FAST.scoring.model_copy(update={"contralateral": True})})
    kw = dict(atlas=tmp_path / "atlas.nii.gz", atlas_labels=tmp_path / "labels.tsv", report=False)
    on = run_audit(tmp_path / "maps", tmp_path / "masks", tmp_path / "on", protocol=contra, **kw)
    off = run_audit(tmp_path / "maps", tmp_path / "masks", tmp_path / "off", protocol=FAST, **kw)
    hand = run_audit(tmp_path / "maps", tmp_path / "both", tmp_path / "hand", protocol=FAST, report=False)
    m_on = {x.method: x.metrics for x in on.results.methods}
    m_off = {x.method: x.metrics for x in off.results.methods}
    # a map on the right region: all its mass in the ground truth with contralateral, almost none without
    assert m_on["right"]["relevance_mass_accuracy"].mean > 0.9
    assert m_off["right"]["relevance_mass_accuracy"].mean < 0.1
    a, b = _scores(on), _scores(hand)
    keys = [k for k in b if k[1] in ("right", "noise", "random")]
    assert len(keys) >= 3 * 8 * 4 and {k: a[k] for k in keys} == pytest.approx({k: b[k] for k in keys}, abs=1e-6)
