"""Hostile and careless input, across the command line and the Python API.

Every case gets correct handling or a named error with exit code 2: no traceback, no silent wrong
result, no lost file, no executed code. (Data-file cases at the loader level: tests/data/test_hostile_data.py.)
"""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from neuroxai.cli import app
from neuroxai.errors import ConfigError, ModelError, NeuroXAIError, RunError
from neuroxai.outdir import MARKER, claim_dir
from neuroxai.report.schema import read_results

runner = CliRunner()


def _cli(*args) -> tuple[int, str]:
    r = runner.invoke(app, [str(a) for a in args])
    out = " ".join(r.output.split())  # rich wraps long messages
    return r.exit_code, out


def _named_exit_2(code: int, out: str, *needles: str) -> None:
    assert code == 2, out
    assert "error:" in out and "Traceback" not in out, out
    for n in needles:
        assert n in out, (n, out)


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# A small protocol on the embedded cohort; the model is given, so nothing trains.
SMALL = textwrap.dedent("""
    id: small
    version: "0.1"
    title: hostile-input tests
    data: {source: embedded, cohort: {n: 24, spacing_mm: 8.0, seed: 0}}
    tasks:
      - id: hippo
        type: region_volume
        params: {regions: [Hippocampus_L, Hippocampus_R], split: [0.5, 0.1, 0.4]}
        null_control: false
    model: {architecture: small_cnn, params: {channels: [4, 8]}, training: {epochs: 1, batch_size: 8, seed: 0}}
    methods:
      - name: gradient
    metrics:
      - name: relevance_rank_accuracy
    statistics: {bootstrap: 100, seed: 0}
    sanity: {model_randomization: {enabled: false}}
    validity: {enabled: false}
    acceptance:
      - {kind: ci_above_chance, metric: relevance_rank_accuracy, margin: 0.0}
    run: {device: cpu, batch_size: 4, save_maps: npz16, seed: 0}
""")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """``(protocol path, trained model path, manifest path of a copy of the cohort)``."""
    from neuroxai.protocol.runner import run_protocol

    root = tmp_path_factory.mktemp("hostile")
    proto = root / "small.yaml"
    proto.write_text(SMALL)
    run_protocol(proto, root / "train", report=False, stop_after="train")
    model = root / "model.pt"
    shutil.copy(next((root / "train").glob("stages/train/*/model.pt")), model)
    cohort = next((root / "train" / "cohort").iterdir())
    return proto, model, cohort / "manifest.csv"


def _copy_cohort(manifest: Path, dest: Path) -> Path:
    shutil.copytree(manifest.parent, dest, ignore=shutil.ignore_patterns(MARKER))
    return dest / "manifest.csv"


def _scores(res) -> list:
    sc = res.results.score_table().frame()
    return sorted(zip(sc["subject_id"], sc["method"], sc["metric"], sc["value"]))


# ------------------------------------------------------------------ protocols never run code
def _evil_protocol(tmp_path: Path, checkpoint: str) -> tuple[Path, Path]:
    sentinel = tmp_path / "pwned"
    kw = tmp_path / "kw.yaml"
    kw.write_text(f"args: [sh, -c, 'touch {sentinel}']\n")
    p = tmp_path / "evil.yaml"
    p.write_text(SMALL.replace("model: {", f"model: {{checkpoint: '{checkpoint}', kwargs: '{kw}', "))
    return p, sentinel


def test_protocol_naming_subprocess_runs_nothing_cli(tmp_path):
    p, sentinel = _evil_protocol(tmp_path, "subprocess:check_call")
    code, out = _cli("validate", p, "--out", tmp_path / "run")
    _named_exit_2(code, out, "cannot run code", "--trust-module subprocess")
    assert not sentinel.exists()


def test_protocol_naming_subprocess_runs_nothing_api(tmp_path):
    from neuroxai.protocol.runner import run_protocol

    p, sentinel = _evil_protocol(tmp_path, "subprocess:check_call")
    with pytest.raises(ConfigError, match="cannot run code"):
        run_protocol(p, tmp_path / "run")
    assert not sentinel.exists() and not (tmp_path / "run").exists()  # refused before any folder


def test_trusted_module_still_calls_only_module_classes(tmp_path):
    p, sentinel = _evil_protocol(tmp_path, "subprocess:check_call")
    code, out = _cli("validate", p, "--out", tmp_path / "run", "--trust-module", "subprocess")
    _named_exit_2(code, out, "not an nn.Module subclass", "not called")
    assert not sentinel.exists()


@pytest.mark.parametrize("spec", ["os:system", "builtins:eval", "collections:OrderedDict", "torch.nn:functional"])
def test_load_user_model_checks_the_class_before_calling(spec, tmp_path):
    from neuroxai.models.byo import load_user_model

    with pytest.raises(ModelError, match="not an nn.Module subclass"):
        load_user_model(spec, kwargs_yaml={"command": f"touch {tmp_path / 'x'}"})
    assert not (tmp_path / "x").exists()


def test_protocol_python_tag_is_refused_not_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    p = tmp_path / "tag.yaml"
    p.write_text(SMALL + f"x: !!python/object/apply:os.system ['touch {sentinel}']\n")
    code, out = _cli("validate", p, "--out", tmp_path / "run")
    _named_exit_2(code, out, "not valid YAML")
    assert not sentinel.exists()


# ------------------------------------------------------------------ YAML limits
BOMB = textwrap.dedent("""
    a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
""")


def test_alias_bomb_protocol_is_refused(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(BOMB)
    code, out = _cli("validate", p, "--out", tmp_path / "run")
    _named_exit_2(code, out, "too many values", "bomb.yaml")


def test_alias_bomb_in_model_kwargs_is_refused(tmp_path):
    from neuroxai.models.byo import load_user_model

    kw = tmp_path / "kw.yaml"
    kw.write_text(BOMB)
    with pytest.raises(ConfigError, match="too many values"):
        load_user_model("small_cnn", kwargs_yaml=kw)


def test_ordinary_anchors_stay_allowed(tmp_path):
    from neuroxai.safe_yaml import load_yaml

    p = tmp_path / "ok.yaml"
    p.write_text("base: &b {lr: 0.1, epochs: 2}\nrun1: *b\nrun2: {<<: *b, epochs: 3}\n")
    assert load_yaml(p) == {"base": {"lr": 0.1, "epochs": 2}, "run1": {"lr": 0.1, "epochs": 2},
                            "run2": {"lr": 0.1, "epochs": 3}}


def test_recursive_alias_is_refused(tmp_path):
    from neuroxai.safe_yaml import load_yaml

    p = tmp_path / "rec.yaml"
    p.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="refers to itself"):
        load_yaml(p)


def test_duplicate_key_is_refused_with_both_lines(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text(SMALL.replace("statistics: {bootstrap: 100, seed: 0}",
                               "statistics: {bootstrap: 100, seed: 0}\nstatistics: {bootstrap: 200, seed: 0}"))
    code, out = _cli("validate", p, "--out", tmp_path / "run")
    _named_exit_2(code, out, "duplicate key 'statistics'", "line 16 and line 17")


def test_duplicate_key_in_a_nested_mapping(tmp_path):
    from neuroxai.protocol.schema import load_protocol

    p = tmp_path / "dup.yaml"
    p.write_text(SMALL.replace("training: {epochs: 1,", "training: {epochs: 1, epochs: 50,"))
    with pytest.raises(ConfigError, match="duplicate key 'epochs'"):
        load_protocol(p)


def test_huge_protocol_file_is_refused_before_parsing(tmp_path):
    p = tmp_path / "huge.yaml"
    p.write_text(SMALL + "# " + "x" * (2 << 20) + "\n")
    code, out = _cli("validate", p, "--out", tmp_path / "run")
    _named_exit_2(code, out, "too large")


@pytest.mark.parametrize("content, needle", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "UTF-8"),
    (b"- just\n- a list\n", "must be a YAML mapping"),
    (b"id: [unclosed\n", "not valid YAML"),
    (b"", "must be a YAML mapping"),
])
def test_protocol_that_is_not_a_protocol(tmp_path, content, needle):
    p = tmp_path / "p.yaml"
    p.write_bytes(content)
    code, out = _cli("validate", p, "--out", tmp_path / "run")
    _named_exit_2(code, out, needle)


def test_protocol_that_is_a_folder(tmp_path):
    code, out = _cli("validate", tmp_path, "--out", tmp_path / "run")
    _named_exit_2(code, out, "is a folder")


def test_model_config_with_duplicate_keys_is_refused(tmp_path):
    from neuroxai.protocol.runner import _config_yaml

    c = tmp_path / "m.yaml"
    c.write_text("channels: [4, 8]\nchannels: [64, 128]\n")
    with pytest.raises(ConfigError, match="duplicate key 'channels'"):
        _config_yaml("models", str(c))


# ------------------------------------------------------------------ files the tool did not write
def test_resume_into_a_folder_that_never_held_a_run(tmp_path, small):
    proto = small[0]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    before = _snapshot(tmp_path / "mine")
    code, out = _cli("validate", proto, "--out", tmp_path / "mine", "--resume")
    _named_exit_2(code, out, "did not write", "thesis.tex")
    assert _snapshot(tmp_path / "mine") == before


def test_demo_out_on_a_non_empty_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.md").write_text("keep me")
    code, out = _cli("demo", "--out", tmp_path / "d", "--quiet")
    _named_exit_2(code, out, "did not write")
    assert _snapshot(tmp_path / "d") == {"notes.md": b"keep me"}


def test_audit_out_holding_the_users_scores_csv(tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scores.csv").write_text("my,own\n1,2\n")
    code, out = _cli("audit", "--maps", tmp_path / "maps", "--masks", tmp_path / "masks", "--out", tmp_path / "out")
    _named_exit_2(code, out, "did not write", "scores.csv")
    assert (tmp_path / "out" / "scores.csv").read_text() == "my,own\n1,2\n"


def test_out_that_is_a_file(tmp_path, small):
    f = tmp_path / "results.txt"
    f.write_text("mine")
    code, out = _cli("validate", small[0], "--out", f)
    _named_exit_2(code, out, "is a file")
    assert f.read_text() == "mine"


def test_cohort_out_on_a_non_empty_folder(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.csv").write_text("subject_id,image\nmine,x.nii.gz\n")
    code, out = _cli("cohort", "--out", tmp_path / "c", "--n", 12)
    _named_exit_2(code, out, "did not write")
    assert (tmp_path / "c" / "manifest.csv").read_text() == "subject_id,image\nmine,x.nii.gz\n"


def test_report_into_a_folder_of_the_users_figures_deletes_nothing(tmp_path):
    from neuroxai.report import build_report

    (tmp_path / "figs" / "figures").mkdir(parents=True)
    (tmp_path / "figs" / "figures" / "my_plot.png").write_bytes(b"png")
    with pytest.raises(RunError, match="did not write"):
        build_report({}, None, tmp_path / "figs")
    assert (tmp_path / "figs" / "figures" / "my_plot.png").read_bytes() == b"png"


def test_a_folder_of_another_kind_is_refused(tmp_path):
    claim_dir(tmp_path / "a", "audit")
    with pytest.raises(RunError, match="audit output, not a run"):
        claim_dir(tmp_path / "a", "run")


def test_validate_without_resume_on_an_existing_run(tmp_path):
    claim_dir(tmp_path / "r", "run")
    (tmp_path / "r" / "run.json").write_text("{}")
    # a run that finished a stage (one that finished none is reused: a failed start, issue 26)
    (tmp_path / "r" / "stages" / "data" / "k").mkdir(parents=True)
    (tmp_path / "r" / "stages" / "data" / "k" / "DONE").write_text("{}")
    code, out = _cli("validate", "quick", "--out", tmp_path / "r")
    _named_exit_2(code, out, "--resume")
    assert (tmp_path / "r" / "run.json").read_text() == "{}"


# ------------------------------------------------------------------ --resume never mixes
def test_resume_after_the_model_file_changed_recomputes(tmp_path, small):
    from neuroxai.protocol.runner import run_protocol

    proto, model, _ = small
    m = tmp_path / "model.pt"
    shutil.copy(model, m)
    first = _scores(run_protocol(proto, tmp_path / "run", checkpoint=str(m), report=False))
    obj = torch.load(m, weights_only=True)  # a different model at the same path
    torch.manual_seed(1)
    obj["state_dict"] = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
                         for k, v in obj["state_dict"].items()}
    torch.save(obj, m)
    resumed = run_protocol(proto, tmp_path / "run", checkpoint=str(m), report=False)
    fresh = run_protocol(proto, tmp_path / "fresh", checkpoint=str(m), report=False)
    assert _scores(resumed) == _scores(fresh)
    assert _scores(resumed) != first


def test_resume_after_image_contents_changed_recomputes(tmp_path, small):
    from neuroxai.protocol.runner import run_protocol

    proto, model, manifest = small
    man = _copy_cohort(manifest, tmp_path / "data")
    first = run_protocol(proto, tmp_path / "run", manifest=str(man), checkpoint=str(model), report=False)
    first_scores = _scores(first)  # the resume below replaces the run's scores.parquet
    df = pd.read_csv(man)
    for rel in df["image"]:  # same paths, new voxels
        path = (man.parent / rel) if not Path(rel).is_absolute() else Path(rel)
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
        data = data + np.random.default_rng(0).normal(0, 0.3 * data.std(), data.shape).astype(np.float32)
        nib.save(nib.Nifti1Image(data, img.affine, img.header), path)
    resumed = run_protocol(proto, tmp_path / "run", manifest=str(man), checkpoint=str(model), report=False)
    fresh = run_protocol(proto, tmp_path / "fresh", manifest=str(man), checkpoint=str(model), report=False)
    assert _scores(resumed) == _scores(fresh)
    assert _scores(resumed) != first_scores
    assert resumed.results.provenance.manifest_hash != first.results.provenance.manifest_hash


def test_resume_after_the_batch_size_changed_recomputes(tmp_path, small):
    from neuroxai.protocol.runner import run_protocol
    from neuroxai.protocol.schema import load_protocol

    proto, model, _ = small
    p4 = load_protocol(proto)
    first = run_protocol(p4, tmp_path / "run", checkpoint=str(model), report=False)
    n_stages = len(list((tmp_path / "run").glob("stages/attribute/*")))
    # an interrupted run: the last chunk and DONE missing; then resumed with another batch size
    d = next((tmp_path / "run").glob("stages/attribute/*"))
    (d / "DONE").unlink()
    sorted(d.glob("chunk_*.npz"))[-1].unlink()
    p3 = p4.model_copy(update={"run": p4.run.model_copy(update={"batch_size": 3})})
    resumed = run_protocol(p3, tmp_path / "run", checkpoint=str(model), report=False)
    fresh = run_protocol(p3, tmp_path / "fresh", checkpoint=str(model), report=False)
    assert _scores(resumed) == _scores(fresh)
    assert len(list((tmp_path / "run").glob("stages/attribute/*"))) == 2 * n_stages  # new stages, not a mix
    n = first.results.score_table().n_rows
    assert resumed.results.score_table().n_rows == n  # no duplicated or lost subject


# ------------------------------------------------------------------ every error is exit 2, named
def _break_one_image(manifest: Path, how: str) -> Path:
    df = pd.read_csv(manifest)
    rel = df["image"].iloc[0]
    path = manifest.parent / rel if not Path(rel).is_absolute() else Path(rel)
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if how == "nan":
        data[tuple(s // 2 for s in data.shape)] = np.nan
        nib.save(nib.Nifti1Image(data, img.affine), path)
    elif how == "affine":
        aff = img.affine.copy()
        aff[:3, 3] += 20.0
        nib.save(nib.Nifti1Image(data, aff), path)
    elif how == "corrupt":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif how == "rgb":
        rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        nib.save(nib.Nifti1Image(rgb, img.affine), path)
    return path


@pytest.mark.parametrize("how", ["nan", "affine", "corrupt", "rgb"])
def test_bad_image_inside_the_loader_is_exit_2_naming_the_file(tmp_path, small, how):
    proto, model, manifest = small
    man = _copy_cohort(manifest, tmp_path / "data")
    bad = _break_one_image(man, how)
    code, out = _cli("validate", proto, "--data", man, "--model", model, "--out", tmp_path / "run", "--quiet")
    _named_exit_2(code, out, bad.name)
    assert "applying transform" not in out


def test_missing_data_path_is_exit_2(tmp_path, small):
    code, out = _cli("validate", small[0], "--data", tmp_path / "nope.csv", "--out", tmp_path / "run")
    _named_exit_2(code, out, "nope.csv")


def test_unexpected_error_is_exit_2_without_traceback_and_debug_shows_it(tmp_path, small, monkeypatch):
    import neuroxai.protocol.runner as R

    def boom(*a, **k):
        raise ZeroDivisionError("an input nobody anticipated")

    monkeypatch.setattr(R, "run_protocol", boom)
    code, out = _cli("validate", small[0], "--out", tmp_path / "run")
    _named_exit_2(code, out, "ZeroDivisionError", "--debug")
    code, out = _cli("--debug", "validate", small[0], "--out", tmp_path / "run2")
    assert code == 2 and "Traceback" in out and "ZeroDivisionError" in out


@pytest.mark.parametrize("name, content", [("x.nii.gz", b"not a nifti at all"), ("x.txt", b"hello"),
                                           ("x.nii", b"\x00" * 10)])
def test_info_on_files_that_are_not_nifti(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    code, out = _cli("info", p)
    _named_exit_2(code, out, name)


def test_model_file_that_is_a_pickle_is_refused(tmp_path, small):
    import pickle

    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"x": 1}))
    code, out = _cli("validate", small[0], "--model", evil, "--out", tmp_path / "run")
    _named_exit_2(code, out, "weights_only")


# ------------------------------------------------------------------ what the outputs hold
def test_formula_like_subject_ids_are_escaped_in_csv(tmp_path):
    from neuroxai.report.build import write_scores_csv
    from neuroxai.report.scores import ScoreTable

    table = ScoreTable.from_frame(pd.DataFrame(
        {"subject_id": ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "sub-01"],
         "method": ["m"] * 5, "metric": ["auroc"] * 5, "value": [0.5, -0.25, 1.0, 0.0, 0.75]}))
    write_scores_csv(table, tmp_path / "scores.csv")
    text = (tmp_path / "scores.csv").read_text()
    rows = list(pd.read_csv(__import__("io").StringIO(text), dtype=str).itertuples(index=False))
    assert [r.subject_id for r in rows] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@SUM(A1)", "sub-01"]
    assert [r.value for r in rows] == ["0.5", "-0.25", "1.0", "0.0", "0.75"]  # numbers untouched


@pytest.mark.parametrize("sid", ["$\\frac{1}{$", "sub-$x^$", "a\\b_$"])
def test_tex_like_subject_ids_draw_as_typed(sid):
    from neuroxai.report import figures as F

    img = np.random.default_rng(0).random((8, 9, 10)).astype(np.float32)
    png = F.overlays(img, img > 0.5, {"m": img}, title=f"subject {sid}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    png = F.distributions({sid: np.array([0.1, 0.2, 0.3])}, 0.1, "auroc")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_maps_nifti_writes_one_map_per_subject(tmp_path, small):
    from neuroxai.protocol.runner import run_protocol
    from neuroxai.protocol.schema import load_protocol

    proto, model, _ = small
    p = load_protocol(proto)
    npz = run_protocol(p, tmp_path / "a", checkpoint=str(model), report=False)
    pn = p.model_copy(update={"run": p.run.model_copy(update={"save_maps": "nifti"})})
    run_protocol(pn, tmp_path / "b", checkpoint=str(model), report=False)
    files = sorted((tmp_path / "b").glob("stages/attribute/*/maps/*_desc-gradient_saliency.nii.gz"))
    n_subjects = npz.results.score_table().frame()["subject_id"].nunique()
    assert len(files) == n_subjects
    chunks = sorted((tmp_path / "a").glob("stages/attribute/*/chunk_*.npz"))
    z = np.load(chunks[0])
    sid = str(z["subject_id"][0])
    img = nib.load(next(f for f in files if f.name.startswith(sid + "_")))
    np.testing.assert_allclose(np.asarray(img.dataobj), z["maps"][0].astype(np.float32), rtol=2e-3, atol=1e-6)
    assert np.allclose(np.abs(np.diag(img.affine)[:3]), 8.0)  # on the model grid, with its affine


def test_save_maps_names_stay_inside_their_folder(tmp_path):
    from neuroxai.protocol.runner import _save_nifti_maps

    attr = torch.rand(2, 1, 4, 4, 4)
    _save_nifti_maps(tmp_path / "maps", ["../../escape", "/abs/path"], attr, torch.eye(4).expand(2, 4, 4), "m")
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.nii.gz"))
    assert written == ["maps/_.._escape_desc-m_saliency.nii.gz", "maps/_abs_path_desc-m_saliency.nii.gz"]


def test_errors_carry_their_cause():
    from neuroxai.errors import named_error as _named

    inner = ConfigError("x", path="f.yaml")
    try:
        try:
            raise inner
        except ConfigError as e:
            raise RuntimeError("applying transform") from e
    except RuntimeError as outer:
        assert _named(outer) is inner
    assert _named(ValueError("plain")) is None
    assert issubclass(RunError, NeuroXAIError)


def test_run_json_of_a_changed_input_is_named_on_resume(tmp_path, small, caplog):
    from neuroxai.protocol.runner import _say_what_changed

    rj = tmp_path / "run.json"
    rj.write_text(json.dumps({"provenance": {"protocol_hash": "a", "manifest_hash": "m1"}}))
    with caplog.at_level("WARNING"):
        _say_what_changed(rj, {"protocol_hash": "a", "manifest_hash": "m2"})
    assert "the data (manifest or image contents) changed" in caplog.text and "the protocol" not in caplog.text


def test_probabilistic_mask_threshold_in_audit(tmp_path):
    """A probabilistic mask cut at --mask-threshold scores exactly as the binary mask cut by hand."""
    rng = np.random.default_rng(0)
    for d in ("maps/m", "prob", "bin3", "bin7"):
        (tmp_path / d).mkdir(parents=True)
    for i in range(4):
        prob = np.zeros((10, 10, 10), np.float32)
        prob[2:8, 2:8, 2:8] = 0.4
        prob[4:6, 4:6, 3 + i % 2:6] = 0.9
        amap = rng.random((10, 10, 10)).astype(np.float32)
        nib.save(nib.Nifti1Image(amap, np.eye(4)), tmp_path / "maps" / "m" / f"sub-{i}_map.nii.gz")
        nib.save(nib.Nifti1Image(prob, np.eye(4)), tmp_path / "prob" / f"sub-{i}_mask.nii.gz")
        nib.save(nib.Nifti1Image((prob > 0.3).astype(np.uint8), np.eye(4)), tmp_path / "bin3" / f"sub-{i}_mask.nii.gz")
        nib.save(nib.Nifti1Image((prob > 0.7).astype(np.uint8), np.eye(4)), tmp_path / "bin7" / f"sub-{i}_mask.nii.gz")

    def run(masks, out, *extra):
        code, text = _cli("audit", "--maps", tmp_path / "maps", "--masks", tmp_path / masks,
                          "--out", tmp_path / out, *extra)
        assert code in (0, 1, 3), text  # a verdict (3: INCONCLUSIVE), not an error
        df = pd.read_csv(tmp_path / out / "report" / "scores.csv")
        df = df[(df.method == "m") & (df.metric == "relevance_mass_accuracy")]
        return df.sort_values("subject_id")["value"].to_numpy()

    np.testing.assert_allclose(run("prob", "p3", "--mask-threshold", "0.3"), run("bin3", "b3"))
    np.testing.assert_allclose(run("prob", "p7", "--mask-threshold", "0.7"), run("bin7", "b7"))
    assert not np.allclose(run("prob", "p5"), run("bin3", "b3x"))  # the default 0.5 is the core only
    assert json.loads((tmp_path / "p7" / "results.json").read_text())["data"]["grid"]["mask_threshold"] == 0.7


def test_a_run_from_before_the_marker_is_adopted_a_lookalike_is_not(tmp_path):
    run = tmp_path / "old"
    (run / "stages").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"protocol": {}, "provenance": {}}))
    assert claim_dir(run, "run") == run and (run / MARKER).is_file()
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "run.json").write_text("{}")  # a user's file that happens to have the name
    with pytest.raises(RunError, match="did not write"):
        claim_dir(fake, "run")


def _manifest_case(tmp_path: Path, case: str) -> Path:
    """A manifest with one careless value (images are tiny distinct volumes)."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "m").mkdir()
    for i in range(3):
        nib.save(nib.Nifti1Image(np.full((6, 6, 6), i + 1.0, np.float32), np.eye(4)), tmp_path / "imgs" / f"s{i}.nii.gz")
    rows = [("s0", "../imgs/s0.nii.gz", "30", "M"), ("s1", "../imgs/s1.nii.gz", "40", "F"),
            ("s2", "../imgs/s2.nii.gz", "50", "F")]
    if case == "age":
        rows[1] = ("s1", "../imgs/s1.nii.gz", "unknown", "F")
    elif case == "sex":
        rows[2] = ("s2", "../imgs/s2.nii.gz", "50", "X")
    elif case == "same_scan":
        rows[2] = ("s2", "../imgs/../imgs/s0.nii.gz", "50", "F")
    elif case == "escape":
        rows[2] = ("s2", "../../nowhere/s2.nii.gz", "50", "F")
    p = tmp_path / "m" / "manifest.csv"
    p.write_text("subject_id,image,age,sex\n" + "".join(",".join(r) + "\n" for r in rows))
    return p


@pytest.mark.parametrize("case, needle", [("age", "unknown"), ("sex", "'X'"), ("same_scan", "s0.nii.gz"),
                                          ("escape", "nowhere")])
def test_check_manifest_catches_careless_values(tmp_path, case, needle):
    code, out = _cli("check-manifest", _manifest_case(tmp_path, case))
    _named_exit_2(code, out, needle, "manifest.csv")


def test_check_manifest_reads_dotdot_paths_and_mf_codes(tmp_path, monkeypatch):
    from neuroxai.data.manifest import load_manifest

    p = _manifest_case(tmp_path, "ok")
    monkeypatch.chdir(tmp_path / "imgs")  # the cwd must not matter
    code, out = _cli("check-manifest", p)
    assert code == 0, out
    df = load_manifest(p)
    assert [Path(x).resolve() for x in df["image"]] == [(tmp_path / "imgs" / f"s{i}.nii.gz").resolve() for i in range(3)]
    assert df["sex"].tolist() == [1, 0, 0]


def test_stop_after_the_store_then_a_cut_down_resume(tmp_path, small):
    proto, model, _ = small
    code, out = _cli("validate", proto, "--out", tmp_path / "r", "--stop-after", "store", "--quiet")
    assert code == 0, out
    assert list((tmp_path / "r").glob("stages/store/*/index.json")) and not (tmp_path / "r" / "stages" / "train").exists()
    code, out = _cli("validate", proto, "--out", tmp_path / "r", "--resume", "--epochs", "1",
                     "--max-test-subjects", "4", "--quiet")
    assert code in (0, 1, 3), out  # a verdict (3: INCONCLUSIVE), not an error
    res = read_results(tmp_path / "r" / "results.json")
    assert res.tasks[0].n_scored == 4
    assert res.protocol.spec["model"]["training"]["epochs"] == 1  # the report says it was cut down
    assert res.protocol.spec["run"]["n_test_subjects"] == 4
    code, out = _cli("validate", proto, "--out", tmp_path / "x", "--stop-after", "everything")
    assert code == 2 and "--stop-after" in out


def test_stage_keys_are_the_same_for_two_fresh_runs(tmp_path, small, monkeypatch):
    """Keys hold content only: two fresh runs of one protocol get the same stage folders, although
    their checkpoint files differ in bytes (torch.save stores the temporary file's name, with the
    writing process's pid)."""
    import neuroxai.atomic as A
    from neuroxai.protocol.runner import run_protocol

    for r, pid in (("a", 1111), ("b", 2222)):  # two processes (every file is written through neuroxai.atomic)
        os_ = __import__("os")
        monkeypatch.setattr(A, "os", __import__("types").SimpleNamespace(
            getpid=lambda pid=pid: pid, replace=os_.replace, fsync=os_.fsync))
        run_protocol(small[0], tmp_path / r, report=False, stop_after="attribute")
    ck = [next((tmp_path / r).glob("stages/train/*/model.pt")).read_bytes() for r in ("a", "b")]
    assert ck[0] != ck[1]
    names = [sorted(p.name for p in (tmp_path / r).glob("stages/*/*")) for r in ("a", "b")]
    assert names[0] == names[1] and any("attribute" in str(p) for p in (tmp_path / "a").glob("stages/*"))


def test_a_cohort_from_before_the_marker_is_adopted_a_look_alike_is_not(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "cohort.json").write_text(json.dumps({"params": {"n": 4}, "grid_shape": [4, 4, 4]}))
    (old / "manifest.csv").write_text("subject_id,image\n")
    assert claim_dir(old, "cohort") == old
    assert json.loads((old / MARKER).read_text())["kind"] == "cohort"
    for i, text in enumerate(('{"name": "my study"}', "[1, 2]", "7", "not json")):
        other = tmp_path / f"user{i}"
        other.mkdir()
        (other / "cohort.json").write_text(text)
        with pytest.raises(RunError, match="did not write"):
            claim_dir(other, "cohort")
        assert not (other / MARKER).exists() and (other / "cohort.json").read_text() == text
