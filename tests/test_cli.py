"""The command line: exit codes, error messages, audit of saved maps."""
from __future__ import annotations

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from neuroxai.cli import app
from neuroxai.report.schema import read_results

runner = CliRunner()


def test_protocols_lists_the_shipped_ones():
    r = runner.invoke(app, ["protocols"])
    assert r.exit_code == 0
    for pid in ("quick", "siegel2025", "preclinical-audit"):
        assert pid in r.output


def test_check_manifest_reports_problems_with_exit_code_2(tmp_path):
    (tmp_path / "m.csv").write_text("subject_id,image\ns1,missing.nii.gz\n")
    r = runner.invoke(app, ["check-manifest", str(tmp_path / "m.csv")])
    assert r.exit_code == 2
    assert "missing.nii.gz" in r.output


def test_validate_refuses_a_used_folder_without_resume(tmp_path):
    from neuroxai.outdir import claim_dir

    claim_dir(tmp_path / "run", "run")  # a folder an earlier run created, which finished a stage
    (tmp_path / "run" / "x").write_text("")
    (tmp_path / "run" / "stages" / "data" / "k").mkdir(parents=True)
    (tmp_path / "run" / "stages" / "data" / "k" / "DONE").write_text("{}")
    r = runner.invoke(app, ["validate", "quick", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "--resume" in r.output
    assert (tmp_path / "run" / "x").exists()


def test_audit_scores_oracle_and_random_maps(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "maps" / "perfect").mkdir(parents=True)
    (tmp_path / "maps" / "noise").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    for i in range(12):
        mask = np.zeros((12, 12, 12), np.uint8)
        mask[2 + i % 3:6 + i % 3, 3:7, 4:9] = 1
        nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "masks" / f"sub-{i}_mask.nii.gz")
        nib.save(nib.Nifti1Image(mask.astype(np.float32), np.eye(4)), tmp_path / "maps" / "perfect" / f"sub-{i}_map.nii.gz")
        nib.save(nib.Nifti1Image(rng.random((12, 12, 12)).astype(np.float32), np.eye(4)),
                 tmp_path / "maps" / "noise" / f"sub-{i}_map.nii.gz")
    r = runner.invoke(app, ["audit", "--maps", str(tmp_path / "maps"), "--masks", str(tmp_path / "masks"),
                            "--out", str(tmp_path / "out")])
    assert r.exit_code == 1, r.output  # the noise maps FAIL
    res = read_results(tmp_path / "out" / "results.json")
    assert res.kind == "audit"
    s = {m.method: m for m in res.methods}
    assert s["perfect"].metrics["relevance_mass_accuracy"].mean == 1.0
    assert s["perfect"].metrics["auroc"].mean == 1.0
    assert s["perfect"].verdict == "PASS" and s["noise"].verdict == "FAIL"
    assert s["oracle"].verdict == "PASS" and s["random"].verdict == "FAIL"  # the scale's two ends
    chance = s["noise"].metrics["relevance_mass_accuracy"].chance
    assert abs(s["noise"].metrics["relevance_mass_accuracy"].mean - chance) < 0.03
    assert (tmp_path / "out" / "report" / "index.html").is_file()
    assert (tmp_path / "out" / "report" / "scores.csv").is_file()


def test_audit_names_a_map_without_mask(tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "maps" / "sub-9_map.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), tmp_path / "masks" / "sub-1_mask.nii.gz")
    r = runner.invoke(app, ["audit", "--maps", str(tmp_path / "maps"), "--masks", str(tmp_path / "masks")])
    assert r.exit_code == 2 and "sub-9" in r.output


def test_info_describes_a_file(tmp_path):
    aff = np.diag([-1.0, 1.2, 1.5, 1])
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), aff), tmp_path / "a.nii.gz")
    r = runner.invoke(app, ["info", str(tmp_path / "a.nii.gz")])
    assert r.exit_code == 0 and "(5, 6, 7)" in r.output and "LAS" in r.output


def test_cli_and_report_show_the_same_main_metric(small_results):
    from neuroxai.cli import _verdict_table
    from neuroxai.report.build import verdict_rows

    res = small_results({"m": {"auroc": {"mean": 0.9, "ci_low": 0.8, "ci_high": 0.95, "chance": 0.5},
                               "relevance_rank_accuracy": {"mean": 0.2, "ci_low": 0.1, "ci_high": 0.3,
                                                           "chance": 0.05}}},
                        acceptance=["relevance_rank_accuracy"], metrics=["auroc", "relevance_rank_accuracy"])
    from rich.console import Console

    con = Console(width=200, record=True)
    con.print(_verdict_table(res))
    text = con.export_text()
    assert "relevance_rank_accuracy" in text and "0.200 [0.100, 0.300]" in text
    assert verdict_rows(res)[0]["metric"] == "relevance_rank_accuracy"


def test_tables_are_not_cut_without_a_terminal(small_results, capsys):
    from neuroxai.cli import _verdict_table, show

    long = "smoothgrad_squared_with_a_long_label"
    res = small_results({long: {"relevance_rank_accuracy_long_metric_name": {
        "mean": 0.2, "ci_low": 0.1, "ci_high": 0.3, "chance": 0.05}}},
        acceptance=["relevance_rank_accuracy_long_metric_name"], metrics=["relevance_rank_accuracy_long_metric_name"])
    show(_verdict_table(res))  # pytest's stdout is not a terminal, as in CI
    out = capsys.readouterr().out
    assert long in out and "relevance_rank_accuracy_long_metric_name" in out and "…" not in out
    r = runner.invoke(app, ["audit", "--help"])
    assert r.exit_code == 0 and "…" not in r.output
    assert max(len(line) for line in r.output.splitlines()) > 80  # sized for the content, not 80 columns


def test_a_run_that_failed_before_any_stage_is_rerun_without_resume(tiny_protocol, tmp_path):
    import yaml

    bad = tmp_path / "bad.yaml"
    spec = yaml.safe_load(tiny_protocol.read_text())
    bad.write_text(yaml.safe_dump({**spec, "run": {**spec["run"], "target": "signal"}}))
    out = tmp_path / "run"
    r = runner.invoke(app, ["validate", str(bad), "--out", str(out), "-q"])
    assert r.exit_code == 2 and "run.target" in r.output
    assert not out.exists()  # a protocol error is found before any folder is made
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject_id,image\ns1,missing.nii.gz\n")
    r = runner.invoke(app, ["validate", str(tiny_protocol), "--data", str(manifest), "--out", str(out), "-q"])
    assert r.exit_code == 2 and "missing.nii.gz" in r.output
    assert (out / ".neuroxai").is_file()  # the folder was claimed before the data failed
    r = runner.invoke(app, ["validate", str(tiny_protocol), "--out", str(out), "-q", "--stop-after", "store"])
    assert r.exit_code == 0, r.output  # reused without --resume: no stage had finished
    assert list(out.glob("stages/*/*/DONE"))
    r = runner.invoke(app, ["validate", str(tiny_protocol), "--out", str(out), "-q", "--stop-after", "store"])
    assert r.exit_code == 2 and "--resume" in r.output  # a finished stage is protected again


def test_audit_reads_a_cohort_folder_by_bids_entities(tmp_path):
    import pandas as pd

    from neuroxai.data.cohort import generate_cohort

    coh = generate_cohort(tmp_path / "cohort", n=12, spacing=8.0, seed=0).parent
    der = coh / "derivatives" / "neuroxai"
    (tmp_path / "maps" / "perfect").mkdir(parents=True)
    for f in sorted(der.glob("sub-*/anat/*_desc-signal_mask.nii.gz")):  # a map that is the ground truth
        img = nib.load(f)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine),
                 tmp_path / "maps" / "perfect" / f.name.replace("_desc-signal_mask", "_map"))
    args = ["audit", "--maps", str(tmp_path / "maps"), "--masks", str(der), "--mask-desc", "signal",
            "--brain-mask", str(der), "--anat", str(coh)]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "out"), "-q"])
    assert r.exit_code in (0, 1, 3), r.output  # a verdict (3: INCONCLUSIVE, no FAIL), not an error
    used = pd.read_csv(tmp_path / "out" / "inputs.csv")["file"].tolist()
    brains = [f for f in used if "brain" in f]
    assert len(brains) == 12 and all(f.endswith("_desc-brain_mask.nii.gz") for f in brains)
    res = read_results(tmp_path / "out" / "results.json")
    assert res.data.restricted_to_brain
    assert res.audit.figures_background == "anatomical image"  # the _T1w images, not the masks beside them
    # another entity on request; an entity that is not there is a named error listing what is
    r = runner.invoke(app, [*args, "--brain-mask-desc", "signal", "--out", str(tmp_path / "out2"), "-q"])
    assert r.exit_code in (0, 1, 3), r.output  # a verdict (3: INCONCLUSIVE, no FAIL), not an error
    assert all(f.endswith("_desc-signal_mask.nii.gz") for f in pd.read_csv(tmp_path / "out2" / "inputs.csv")["file"]
               if "/derivatives/" in f)
    r = runner.invoke(app, [*args, "--anat-suffix", "T2w", "--out", str(tmp_path / "out3"), "-q"])
    assert r.exit_code == 2 and "_T2w" in r.output and "_T1w" in r.output


def test_debug_does_not_leak_into_the_next_command(tmp_path):
    """--debug holds for its own command only: a later command in the same process (the Python
    API, a test run) prints a named error, not a traceback."""
    missing = str(tmp_path / "missing.yaml")
    r = runner.invoke(app, ["--debug", "validate", missing, "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "Traceback" in r.output
    r = runner.invoke(app, ["validate", missing, "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output, r.output
