"""Hostile and careless input, round 2 (issue 23): ids never become paths, nothing hangs, every
setting is checked before work starts, every error is named.

Each case ends in correct handling or exit 2 with a message naming the file or key, what was
expected, what was found and the fix. Round 1: tests/test_hostile_input.py.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from neuroxai.cli import app
from neuroxai.errors import ConfigError, ManifestError, NeuroXAIError, RunError, VolumeFileError, WriteError
from neuroxai.outdir import MARKER
from neuroxai.safepath import MAX_NAME, describe_special, inside, own_dir, safe_label, safe_name, unique_names

from .test_hostile_input import SMALL

runner = CliRunner()


def _cli(*args) -> tuple[int, str]:
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, " ".join(r.output.split())  # rich wraps long messages


def _named_exit_2(code: int, out: str, *needles: str) -> None:
    """Exit 2, one named message (expected / found / fix), no traceback, no "no named check"."""
    assert code == 2, out
    assert "error:" in out and "Traceback" not in out and "no named check" not in out, out
    # our errors: expected / found / fix; a protocol's pydantic errors: "allowed ...; found: ..." + fix
    assert ("expected:" in out or "allowed" in out) and "found" in out and "fix:" in out, out
    for n in needles:
        assert n in out, (n, out)


def _named(exc: NeuroXAIError, *needles: str) -> None:
    assert exc.expected is not None and exc.found is not None and exc.fix, str(exc)
    for n in needles:
        assert n in str(exc), (n, str(exc))


def _all_files(root: Path) -> list[Path]:
    return [Path(dp) / f for dp, dns, fns in os.walk(root) for f in fns + [d for d in dns
                                                                           if (Path(dp) / d).is_symlink()]]


def _assert_inside(root: Path, files) -> None:
    base = root.resolve()
    for f in files:
        assert Path(os.path.realpath(f)).is_relative_to(base), f


# Arbitrary ids: slashes, '..', absolute paths, NUL, newlines, 10,000 characters, any unicode.
HOSTILE = ["../../../X", "/abs/dir/X", "..", ".", "", "a/../../b", "\x00nul", "line\nbreak", "x" * 10_000,
           "Ünïcødé/🧠", "C:\\win\\path", "~/home", "-rf", ".hidden", "a" * 300 + "/..", "$(touch pwned)"]
ids = st.one_of(st.sampled_from(HOSTILE), st.text(min_size=0, max_size=400),
                st.text(alphabet="./\\\x00\n~-_ab", min_size=0, max_size=40))


# ------------------------------------------------------------------ 1. ids never become paths
@settings(max_examples=300, deadline=None)
@given(ids)
def test_safe_name_is_one_short_component(text):
    for name in (safe_name(text), safe_label(text)):
        assert name and len(name.encode()) <= MAX_NAME and "/" not in name and "\x00" not in name
        assert not name.startswith(".") and name.isascii()
    assert safe_name(safe_name(text)) == safe_name(text)  # idempotent: the audit reads back what export wrote


def test_safe_names_of_long_ids_stay_apart():
    a, b = "s" * 5000 + "1", "s" * 5000 + "2"
    assert safe_name(a) != safe_name(b) and len(safe_name(a)) == MAX_NAME
    assert unique_names({"a/b": "a_b", "a_b": "a_b", "c": "c"})["c"] == "c"
    u = unique_names({"a/b": "a_b", "a_b": "a_b"})
    assert len(set(u.values())) == 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sids=st.lists(ids, min_size=1, max_size=3, unique=True), method=ids)
def test_save_maps_nifti_writes_inside_its_folder_for_any_id(tmp_path_factory, sids, method):
    from neuroxai.protocol.stages.attribute import save_nifti_maps

    root = tmp_path_factory.mktemp("maps")
    folder = root / "run" / "maps"
    attr = torch.rand(len(sids), 1, 2, 2, 2)
    try:
        save_nifti_maps(folder, sids, attr, torch.eye(4).expand(len(sids), 4, 4), method)
    except NeuroXAIError:
        pass  # a named refusal is fine; a write outside is not
    _assert_inside(folder, _all_files(root))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sids=st.lists(ids, min_size=1, max_size=3, unique=True), task=ids, method=ids)
def test_export_writes_inside_the_export_folder_for_any_id(tmp_path_factory, sids, task, method):
    from neuroxai.data.volume import save_volume
    from neuroxai.data.bids import bids_label, saliency_name
    from neuroxai.protocol.export import _file, subject_names

    deriv = tmp_path_factory.mktemp("export") / "derivatives"
    try:
        names = subject_names(sids)
    except ManifestError as exc:  # two ids sharing a file name: named, nothing written
        _named(exc, "same file name")
        return
    label = bids_label(task)
    for s in sids:
        n = names[s]
        save_volume(np.ones((2, 2, 2)), np.eye(4), _file(deriv, f"groundtruth-{label}", n,
                                                         f"{n}_desc-{label}_mask.nii.gz"), np.uint8)
        save_volume(np.ones((2, 2, 2)), np.eye(4), _file(deriv, f"xai-{label}", n, saliency_name(n, method)))
    files = _all_files(deriv.parent)
    assert len(files) == 2 * len(sids)
    _assert_inside(deriv, files)


def _report_inputs(task_ids):
    from tests.report._fixtures import results_dict

    text = json.dumps(results_dict())
    for old, new in zip(("hippocampus_volume", "lesion"), task_ids):
        text = text.replace(json.dumps(old), json.dumps(new))
    img = np.random.default_rng(0).random((6, 7, 6)).astype(np.float32)
    figs = {"tasks": {t: {"image": img, "mask": img > 0.7, "spacing": (2.0, 2.0, 2.0), "maps": {"gradcam": img}}
                      for t in task_ids}}
    return json.loads(text), figs


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task_ids=st.lists(ids, min_size=2, max_size=2, unique=True))
def test_report_writes_inside_its_folder_for_any_task_id(tmp_path_factory, task_ids):
    from neuroxai.report import build_report

    root = tmp_path_factory.mktemp("report")
    results, figs = _report_inputs(task_ids)
    build_report(results, figs, root / "out")
    files = _all_files(root)
    assert sum(f.suffix == ".png" for f in files) >= 2
    _assert_inside(root / "out", files)


@pytest.mark.parametrize("tid", ["/abs/dir/X", "../../../X", "x" * 10_000])
def test_report_of_a_received_run_with_a_hostile_task_id(tmp_path, tid):
    """`neuroxai report` on someone's run folder whose results.json holds such a task id."""
    results, _ = _report_inputs([tid, "lesion"])
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text(json.dumps({"kind": "run", "tool": "neuroxai"}))
    (run / "results.json").write_text(json.dumps(results))
    code, out = _cli("report", run)
    assert code == 0, out
    _assert_inside(run, _all_files(tmp_path))
    assert not Path("/abs").exists() and not (tmp_path.parent.parent / "X_mean_maps.png").exists()


def test_report_through_a_symlinked_figures_folder_writes_nothing_there(tmp_path):
    from neuroxai.report import build_report

    results, figs = _report_inputs(["t1", "t2"])
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text(json.dumps({"kind": "run", "tool": "neuroxai"}))
    build_report(results, figs, run / "report")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "t1_mean_maps.png").write_bytes(b"the user's own figure")
    (victim / "holiday.png").write_bytes(b"another")
    shutil.rmtree(run / "report" / "figures")
    (run / "report" / "figures").symlink_to(victim, target_is_directory=True)
    build_report(results, figs, run / "report")
    assert (victim / "t1_mean_maps.png").read_bytes() == b"the user's own figure"
    assert (victim / "holiday.png").read_bytes() == b"another"  # stale-figure cleanup did not reach it
    assert not (run / "report" / "figures").is_symlink() and (run / "report" / "figures" / "t1_mean_maps.png").is_file()


def test_report_folder_that_is_a_symlink_in_a_received_run_is_replaced(tmp_path):
    results, _ = _report_inputs(["t1", "t2"])
    run, victim = tmp_path / "run", tmp_path / "victim"
    run.mkdir(), victim.mkdir()
    (run / MARKER).write_text(json.dumps({"kind": "run", "tool": "neuroxai"}))
    (run / "results.json").write_text(json.dumps(results))
    (run / "report").symlink_to(victim, target_is_directory=True)
    code, out = _cli("report", run)
    assert code == 0, out
    assert list(victim.iterdir()) == [] and not (run / "report").is_symlink()


def test_a_planted_link_at_the_temporary_name_is_not_followed(tmp_path):
    from neuroxai.atomic import _temp_path, atomic_write

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    target = tmp_path / "out" / "index.html"
    target.parent.mkdir()
    _temp_path(target).symlink_to(victim)
    atomic_write(target, "new")
    assert victim.read_text() == "keep" and target.read_text() == "new"


def test_inside_refuses_components_and_symlinks_out(tmp_path):
    for bad in ("..", "a/b", "", "."):
        with pytest.raises(RunError, match="one file-name component"):
            inside(tmp_path, bad)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    with pytest.raises(RunError, match="outside its output folder") as e:
        inside(tmp_path / "out", "link", "x.png")
    _named(e.value)
    own_dir(tmp_path / "out", "link", "sub")  # own_dir replaces the link with a folder
    assert not (tmp_path / "out" / "link").is_symlink() and (tmp_path / "out" / "link" / "sub").is_dir()


def test_own_dir_does_not_delete_a_users_file(tmp_path):
    (tmp_path / "figures").write_text("mine")
    with pytest.raises(RunError, match="a file stands where") as e:
        own_dir(tmp_path, "figures")
    _named(e.value)
    assert (tmp_path / "figures").read_text() == "mine"


def test_export_of_two_ids_sharing_a_file_name_is_refused():
    from neuroxai.protocol.export import subject_names

    with pytest.raises(ManifestError, match="same file name") as e:
        subject_names(["a/b", "a_b"])
    _named(e.value, "'a/b'", "'a_b'")


# ------------------------------------------------------------------ a whole run with hostile ids
EVIL_SIDS = ["../../../../x/EVIL3", "/abs/EVIL", "..", "a\nb", "s" * 3000, "Ünï/🧠", "$(touch pwned)", "-rf"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(protocol text, untrained small_cnn checkpoint, manifest of a 24-subject 8 mm cohort)``:
    nothing trains (a model at chance is enough to write every file a run writes)."""
    from neuroxai.data.cohort import generate_cohort
    from neuroxai.models import MODELS
    from neuroxai.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    manifest = generate_cohort(root / "cohort", n=24, spacing=8.0, seed=0)
    torch.manual_seed(0)
    cfg = {"in_channels": 1, "n_outputs": 2, "channels": [4, 8]}
    model = save_checkpoint(root / "model.pt", MODELS["small_cnn"](**cfg), {"architecture": "small_cnn", "config": cfg})
    return root, model, manifest


def _hostile_manifest(manifest: Path, dest: Path, sids) -> Path:
    shutil.copytree(manifest.parent, dest, ignore=shutil.ignore_patterns(MARKER))
    df = pd.read_csv(dest / "manifest.csv", dtype=str)
    df.loc[:len(sids) - 1, "subject_id"] = sids
    df.to_csv(dest / "manifest.csv", index=False)
    return dest / "manifest.csv"


def test_a_run_report_and_export_with_hostile_ids_write_only_inside(tmp_path, tiny):
    root, model, manifest = tiny
    proto = tmp_path / "p.yaml"
    proto.write_text(SMALL.replace("- id: hippo", "- id: '../../../X'").replace(
        "- name: gradient", "- name: gradient\n    label: '/abs/../lbl'"))
    data = _hostile_manifest(manifest, tmp_path / "data", EVIL_SIDS)
    before = set(_all_files(tmp_path))
    code, out = _cli("validate", proto, "--data", data, "--model", model, "--out", tmp_path / "w" / "run",
                     "--export", tmp_path / "w" / "exp", "-q")
    assert code in (0, 1, 3), out  # a verdict: PASS, FAIL or (main) INCONCLUSIVE; never 2
    new = set(_all_files(tmp_path)) - before
    _assert_inside(tmp_path / "w", new)
    run_files = [f for f in new if Path(f).is_relative_to(tmp_path / "w" / "run")]
    exp_files = [f for f in new if Path(f).is_relative_to(tmp_path / "w" / "exp")]
    assert len(run_files) + len(exp_files) == len(new)
    assert any(f.name.startswith("_.._.._X") and f.suffix == ".png" for f in run_files)
    sal = [f.name for f in exp_files if f.name.endswith("_saliency.nii.gz")]
    assert all("_desc-abslbl_" in n for n in sal) and {n.split("_desc-")[0] for n in sal} & {
        safe_name(s) for s in EVIL_SIDS}, sal  # the test subjects with hostile ids were exported, safely named
    assert not Path("/abs").exists() and not (tmp_path.parent / "X_mean_maps.png").exists()
    res = json.loads((tmp_path / "w" / "run" / "results.json").read_text())
    assert res["tasks"][0]["id"] == "../../../X"


# ------------------------------------------------------------------ 3. every setting checked before any data
LATE = [  # (SMALL text, replacement, what the message names)
    ("epochs: 1", "epochz: 1", "epochz"),
    ("epochs: 1", "epochs: -1", "epochs"),
    ("batch_size: 8,", "batch_size: 0,", "batch_size"),
    ("seed: 0}}\nmethods", "seed: 0, lr: .nan}}\nmethods", "lr"),
    ("split: [0.5, 0.1, 0.4]", "split: [0.5, 0.1, 0.4], margin_mmm: 2", "margin_mmm"),
    ("split: [0.5, 0.1, 0.4]", "split: [0.5, 0.1, 0.4], margin_mm: -2", "tasks.0.params.margin_mm"),
    ("- name: gradient", "- name: smoothgrad\n    params: {sigma: -1}", "methods.0.params.sigma"),
    ("- name: gradient", "- name: smoothgrad\n    params: {n_samples: 0}", "methods.0.params.n_samples"),
    ("- name: gradient", "- name: smoothgrad\n    params: {n_sample: 8}", "n_sample"),
    ("- name: gradient", "- name: smoothgrad\n    params: {seed: -1}", "methods.0.params.seed"),
    ("- name: gradient", "- name: gradient\n    params: {abs: 'yes'}", "methods.0.params.abs"),
    ("- name: relevance_rank_accuracy", "- name: relevance_rank_accuracy\n    params: {k: 3}", "['k']"),
    ("- name: relevance_rank_accuracy", "- name: relevance_rank_accuracy\n  - name: top_k_intersection\n"
     "    params: {k: .nan}", "metrics.1.params.k"),
    ("channels: [4, 8]", "channels: [4, 8], dropout: 1.5", "model.params.dropout"),
    ("channels: [4, 8]", "channelz: [4, 8]", "channelz"),
    ("channels: [4, 8]", "channels: [0, 8]", "model.params.channels"),
    ("channels: [4, 8]", "channels: [100000, 8]", "4096"),
    ("channels: [4, 8]", "channels: [4, 8], n_outputs: 7", "n_outputs"),
    ("n: 24", "n: 1000000000", "data.cohort.n"),
    ("spacing_mm: 8.0", "spacing_mm: 0.01", "data.cohort.spacing_mm"),
    ("bootstrap: 100", "bootstrap: 1000000000", "statistics.bootstrap"),
    ("bootstrap: 100,", "bootstrap: 100, n_permutations: 1000000000,", "statistics.n_permutations"),
    ("bootstrap: 100, seed: 0", "bootstrap: 100, seed: 1180591620717411303424", "statistics.seed"),
    ("run: {device: cpu, batch_size: 4", "run: {device: cpu, batch_size: 100000000", "run.batch_size"),
    ("source: embedded,", "source: embedded, shape: [0, 8, 8],", "data.shape"),
    ("source: embedded,", "source: embedded, shape: [4000, 4000, 4000],", "data.shape"),
    ("regions: [Hippocampus_L, Hippocampus_R]", "regions: [Hipocampus_L, Hippocampus_R]", "Hippocampus_L"),
    ("type: region_volume\n    params: {", "type: null_control\n    params: {base: lesion, ", "regions"),
    ("type: region_volume\n    params: {", "type: null_control\n    params: {base: nope, ", "tasks.0.params.base"),
]


@pytest.fixture
def no_data(monkeypatch):
    """Any read of a cohort, a manifest or an image fails the test."""
    import nibabel

    import neuroxai.data.cohort as C
    import neuroxai.data.manifest as M
    import neuroxai.protocol.runner as R

    def boom(*a, **k):
        raise AssertionError("data was read before the settings were checked")

    for mod, name in ((C, "generate_cohort"), (M, "load_manifest"), (nibabel, "load"), (R, "prepare_data")):
        monkeypatch.setattr(mod, name, boom)
    from neuroxai.protocol.registries import registries

    registries()  # imports done once, not timed


@pytest.mark.parametrize("old,new,needle", LATE, ids=[c[1].split("\n")[-1][:40] for c in LATE])
def test_a_bad_setting_fails_within_a_second_before_any_data_cli(tmp_path, no_data, old, new, needle):
    assert old in SMALL
    p = tmp_path / "p.yaml"
    p.write_text(SMALL.replace(old, new, 1))
    t = time.perf_counter()
    code, out = _cli("validate", p, "--out", tmp_path / "run")
    assert time.perf_counter() - t < 1.0
    _named_exit_2(code, out, str(p), needle)
    assert not (tmp_path / "run").exists()  # refused before any folder


@pytest.mark.parametrize("old,new,needle", LATE[:8], ids=[c[1].split("\n")[-1][:40] for c in LATE[:8]])
def test_a_bad_setting_in_a_python_protocol_fails_before_any_data_api(tmp_path, no_data, old, new, needle):
    """A Protocol built in Python (model_validate, model_copy) is checked by run_protocol itself."""
    from neuroxai.protocol.runner import run_protocol
    from neuroxai.protocol.schema import Protocol
    from neuroxai.safe_yaml import load_yaml

    p = tmp_path / "p.yaml"
    p.write_text(SMALL.replace(old, new, 1))
    proto = Protocol.model_validate(load_yaml(p))
    t = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        run_protocol(proto, tmp_path / "run")
    assert time.perf_counter() - t < 1.0
    _named(e.value, needle)
    assert not (tmp_path / "run").exists()


def test_a_misspelt_key_in_a_named_training_config_yaml(tmp_path, no_data):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("epochs: 2\nbatchsize: 4\n")
    p = tmp_path / "p.yaml"
    p.write_text(SMALL.replace("training: {", f"training_config: '{cfg}', training: {{"))
    code, out = _cli("validate", p, "--out", tmp_path / "run")
    _named_exit_2(code, out, "batchsize", "model.training")


def test_a_null_control_with_its_bases_parameters_passes_the_early_checks(tmp_path):
    from neuroxai.protocol.schema import load_protocol

    p = tmp_path / "p.yaml"
    p.write_text(SMALL.replace("type: region_volume", "type: null_control"))
    assert load_protocol(p).tasks[0].params["regions"] == ["Hippocampus_L", "Hippocampus_R"]


def test_shipped_protocols_pass_the_early_checks():
    from neuroxai.protocol.schema import list_protocols

    assert {p.id for p in list_protocols()} >= {"quick", "siegel2025", "audit"}


# ------------------------------------------------------------------ 2. nothing hangs, nothing absurd is allocated
@pytest.fixture
def no_hang():
    """Fail (not hang) if a case blocks: SIGALRM after 60 s."""
    import signal

    def _alarm(*_):
        raise TimeoutError("hung")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        p = tmp_path / "pipe.nii.gz"
        os.mkfifo(p)
    elif kind == "loop":
        p = tmp_path / "loop.nii.gz"
        p.symlink_to(p)
    elif kind == "dangling":
        p = tmp_path / "gone.nii.gz"
        p.symlink_to(tmp_path / "nothing.nii.gz")
    elif kind == "long":
        p = tmp_path / ("x" * 300 + ".nii.gz")
    else:
        p = Path("/dev/zero")
    return p


SPECIAL = {"fifo": "named pipe", "loop": "symbolic link loop", "dangling": "symbolic link to nothing",
           "devzero": "device", "long": "over the file system's limit"}


@pytest.mark.parametrize("kind", sorted(SPECIAL))
def test_info_on_a_special_file_is_named_before_open(tmp_path, no_hang, kind):
    p = _special(tmp_path, kind)
    code, out = _cli("info", p)
    _named_exit_2(code, out, SPECIAL[kind])
    assert "file not found" not in out


@pytest.mark.parametrize("kind", ["fifo", "loop", "devzero"])
def test_protocol_that_is_a_special_file_is_named_before_open(tmp_path, no_hang, kind):
    p = _special(tmp_path, kind)
    code, out = _cli("validate", p, "--out", tmp_path / "run")
    _named_exit_2(code, out, SPECIAL[kind])
    assert not (tmp_path / "run").exists()


def test_manifest_row_naming_a_fifo(tmp_path, no_hang, tiny):
    _, _, manifest = tiny
    data = _hostile_manifest(manifest, tmp_path / "data", [])
    df = pd.read_csv(data, dtype=str)
    os.mkfifo(tmp_path / "pipe.nii.gz")
    df.loc[0, "image"] = str(tmp_path / "pipe.nii.gz")
    df.to_csv(data, index=False)
    code, out = _cli("check-manifest", data)
    assert code == 2 and "named pipe" in out and "row 2" in out, out


@pytest.mark.parametrize("args,needle", [
    (["--n", "0"], "at least one subject"), (["--n", "-3"], "at least one subject"),
    (["--n", "1000000000"], "100,000"), (["--spacing", "0"], "voxel size"), (["--spacing", "nan"], "voxel size"),
    (["--spacing", "-4"], "voxel size"), (["--spacing", "0.01"], "voxel size"), (["--spacing", "0.2"], "voxels"),
    (["--seed", "-1"], "seed")])
def test_cohort_options_no_machine_can_hold_are_named_before_anything(tmp_path, args, needle):
    code, out = _cli("cohort", "--out", tmp_path / "c", *args)
    _named_exit_2(code, out, needle)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("args,needle", [
    (["--shape", "0,0,0"], "--shape"), (["--shape", "abc"], "--shape"), (["--shape", "16,16,16"], "each ≥ 32"),
    (["--shape", "64,64"], "--shape"), (["--batch", "0"], "--batch"),
    (["--shape", "4000,4000,4000"], "limit"), (["--batch", "100000", "--shape", "256,256,256"], "--batch × --shape")])
def test_bench_options_are_named(args, needle):
    code, out = _cli("bench", *args)
    _named_exit_2(code, out, needle)


def test_a_subject_with_8000_mm_voxels_is_named_before_a_huge_allocation(tmp_path):
    from neuroxai.data import load_volume
    from neuroxai.data.transforms import resample
    from neuroxai.errors import VolumeShapeError

    p = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.diag([8000.0, 8000.0, 8000.0, 1.0])), p)
    v = load_volume(p)
    with pytest.raises(VolumeShapeError, match="no machine can hold") as e:
        resample(v, 2.0)
    _named(e.value, "8000.0", "mm, not µm", "sub-01_T1w.nii.gz")


def test_out_with_a_name_over_255_bytes_is_named(tmp_path):
    code, out = _cli("cohort", "--n", "12", "--out", tmp_path / ("y" * 300))
    _named_exit_2(code, out, "over the file system's limit")


def test_a_disk_that_fills_mid_write_is_named(tmp_path):
    """``ulimit -f`` (RLIMIT_FSIZE): the write fails with EFBIG; a named error, no half file."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "neuroxai.cli", "cohort", "--n", "12", "--spacing", "4", "--out",
                        str(tmp_path / "c")], preexec_fn=limit, capture_output=True, text=True, env=env, timeout=300)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and "cannot write the file" in out and "ulimit -f" in out, out
    assert "no named check" not in out and "Traceback" not in out
    assert not [p for p in (tmp_path / "c").rglob(".*.tmp*")]  # nothing half-written stays


def test_a_failed_write_is_still_an_oserror_and_names_the_fix(tmp_path, monkeypatch):
    import errno

    from neuroxai.atomic import atomic_write

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as e:
        atomic_write(tmp_path / "x.bin", write=full)
    assert isinstance(e.value, OSError) and isinstance(e.value, RunError)
    _named(e.value, "x.bin", "free disk space")


@pytest.mark.parametrize("text,needle", [
    ("#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 one 0 0 0\n",
     "'one'"),
    ("#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nFixedParameters: 0 0 0\n", "Parameters:")])
def test_an_itk_transform_with_a_word_that_is_not_a_number(tmp_path, text, needle):
    from neuroxai.data.spaces import read_transform

    p = tmp_path / "t.txt"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        read_transform(p)
    _named(e.value, needle, "t.txt")


# ------------------------------------------------------------------ 3. no silent wrong result
def test_a_segmentation_with_non_integer_labels_is_refused(tmp_path):
    """A label map resampled trilinearly (labels + 0.6) would round to the neighbouring label."""
    from neuroxai.errors import TaskError
    from neuroxai.tasks.known_signal import measure_volumes

    lab = np.zeros((6, 6, 6), np.float32)
    lab[1:3] = 41
    ok = tmp_path / "sub-01_dseg.nii.gz"
    nib.save(nib.Nifti1Image(lab, np.eye(4)), ok)
    assert measure_volumes([str(ok)], [41])[0] == pytest.approx(2 * 36 / 1000.0)  # integer labels: measured
    bad = tmp_path / "sub-02_dseg.nii.gz"
    nib.save(nib.Nifti1Image(lab + 0.6 * (lab > 0), np.eye(4)), bad)
    with pytest.raises(TaskError, match="not integer-valued") as e:
        measure_volumes([str(ok), str(bad)], [41])
    _named(e.value, "sub-02_dseg", "41.6", "nearest-neighbour")


def test_a_run_on_a_trilinear_segmentation_stops_with_its_name(tmp_path, tiny):
    _, model, manifest = tiny
    data = _hostile_manifest(manifest, tmp_path / "data", [])
    df = pd.read_csv(data, dtype=str)
    seg = Path(data.parent / df.loc[3, "segmentation"])
    img = nib.load(seg)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32) + 0.6, img.affine), seg)
    p = tmp_path / "p.yaml"
    p.write_text(SMALL)
    code, out = _cli("validate", p, "--data", data, "--model", model, "--out", tmp_path / "run", "-q")
    _named_exit_2(code, out, "not integer-valued", seg.name)


def test_the_image_column_naming_the_segmentation_is_refused(tmp_path, tiny):
    _, _, manifest = tiny
    data = _hostile_manifest(manifest, tmp_path / "data", [])
    df = pd.read_csv(data, dtype=str)
    df.loc[2, "image"] = df.loc[2, "segmentation"]
    df.to_csv(data, index=False)
    code, out = _cli("check-manifest", data)
    assert code == 2 and "row 4" in out and "the image is the subject's segmentation" in out, out


def _model_file(tmp_path, n_outputs=2, nan=False, script=False) -> Path:
    from neuroxai.models import MODELS
    from neuroxai.models.checkpoint import save_checkpoint

    cfg = {"in_channels": 1, "n_outputs": n_outputs, "channels": [4, 8]}
    torch.manual_seed(0)
    net = MODELS["small_cnn"](**cfg)
    if nan:
        with torch.no_grad():
            net[-1].weight.fill_(float("nan"))
    if script:
        p = tmp_path / "model.ts"
        torch.jit.script(net.eval()).save(str(p))
        return p
    return save_checkpoint(tmp_path / "model.pt", net, {"architecture": "small_cnn", "config": cfg})


@pytest.mark.parametrize("how,needle", [
    ({"n_outputs": 7}, "7 outputs but task 'hippo' has 2 classes"),
    ({"nan": True}, "outputs are not finite"),
    ({"script": True}, "LRP cannot run on a TorchScript model")])
def test_a_model_that_does_not_fit_the_task_or_methods_is_named(tmp_path, tiny, how, needle):
    _, _, manifest = tiny
    p = tmp_path / "p.yaml"
    p.write_text(SMALL.replace("- name: gradient", "- name: gradient\n  - name: lrp") if "script" in how else SMALL)
    model = _model_file(tmp_path, **how)
    code, out = _cli("validate", p, "--data", manifest, "--model", model, "--out", tmp_path / "run", "-q")
    _named_exit_2(code, out, needle, model.name)
    assert not list((tmp_path / "run").glob("stages/attribute/*/chunk_*.npz"))  # named before any attribution
    if "script" in how:  # a TorchScript file is recognised before any data is read
        assert not list((tmp_path / "run").glob("stages/*"))


def test_audit_out_inside_maps_is_refused_before_creating_anything(tmp_path):
    maps, masks = tmp_path / "maps", tmp_path / "masks"
    (maps / "gradcam").mkdir(parents=True)
    masks.mkdir()
    for d in (maps / "gradcam", masks):
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)),
                 d / ("sub-01_mask.nii.gz" if d == masks else "sub-01.nii.gz"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out in (maps / "audit", maps, masks / "a" / "b"):
        code, msg = _cli("audit", "--maps", maps, "--masks", masks, "--out", out)
        _named_exit_2(code, msg, "the output folder is inside")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing created


def test_a_finite_1e300_float64_map_is_not_called_inf(tmp_path):
    from neuroxai.data import load_volume
    from neuroxai.errors import VolumeValueError

    a = np.zeros((4, 4, 4))
    a[1, 1, 1] = 1e300
    p = tmp_path / "sub-01_desc-m_saliency.nii.gz"
    nib.save(nib.Nifti1Image(a, np.eye(4)), p)
    with pytest.raises(VolumeValueError, match="too large for float32") as e:
        load_volume(p)
    _named(e.value, "1e+300")
    a[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(a, np.eye(4)), p)
    with pytest.raises(VolumeValueError, match="non-finite") as e:  # a true Inf stays "Inf"
        load_volume(p)
    assert "1 Inf" in str(e.value)


# ------------------------------------------------------------------ 4. errors name the problem
def test_a_forward_pass_that_raises_is_not_called_a_shape_problem():
    from neuroxai.errors import ModelError
    from neuroxai.models.byo import check_input_shape

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, 3)

        def forward(self, x):
            return {"logits": self.conv(x)}["logit"]  # the user's bug

    with pytest.raises(ModelError, match="forward pass raised") as e:
        check_input_shape(Broken(), (1, 1, 8, 8, 8))
    _named(e.value, "KeyError", "'logit'")
    assert "input shape" not in str(e.value)


@pytest.mark.parametrize("kind", ["fifo", "devzero", "loop"])
def test_a_model_file_that_is_a_special_file_is_named_before_open(tmp_path, no_hang, kind):
    from neuroxai.errors import ModelError
    from neuroxai.models import read_checkpoint
    from neuroxai.models.byo import load_user_model

    p = _special(tmp_path, kind)
    with pytest.raises(ModelError) as e:
        load_user_model(str(p))
    _named(e.value, SPECIAL[kind])
    with pytest.raises(ModelError) as e:
        read_checkpoint(p)
    assert SPECIAL[kind] in str(e.value)


def test_a_brain_mask_in_another_space_is_named_with_its_file(tmp_path):
    maps, masks = tmp_path / "maps" / "gradcam", tmp_path / "masks"
    maps.mkdir(parents=True), masks.mkdir()
    rng = np.random.default_rng(0)
    m = np.zeros((8, 8, 8), np.float32)
    m[2:5, 2:5, 2:5] = 1
    for s in ("sub-01", "sub-02"):
        nib.save(nib.Nifti1Image(rng.random((8, 8, 8)).astype(np.float32), np.eye(4)), maps / f"{s}.nii.gz")
        nib.save(nib.Nifti1Image(m, np.eye(4)), masks / f"{s}_mask.nii.gz")
    far = np.eye(4)
    far[:3, 3] = 500.0  # another space: 500 mm away
    brain = tmp_path / "brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), far), brain)
    code, out = _cli("audit", "--maps", tmp_path / "maps", "--masks", masks, "--brain-mask", brain,
                     "--out", tmp_path / "audit")
    _named_exit_2(code, out, "brain_mask.nii.gz", "another space", "500.0")
