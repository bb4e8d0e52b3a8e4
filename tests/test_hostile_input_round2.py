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
    from neuroxai.protocol.audit import bids_label, saliency_name
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


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
    assert code in (0, 1), out
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


def test_shipped_protocols_pass_the_early_checks():
    from neuroxai.protocol.schema import list_protocols

    assert {p.id for p in list_protocols()} >= {"quick", "siegel2025", "audit"}
