"""The ``neuroxai`` command line. Exit codes: 0 = every method passes, 1 = some fail, 2 = error.

Start with ``neuroxai demo``; then ``neuroxai validate PROTOCOL --data MANIFEST``.

Every error is exit 2 with a named message (file, expected, found, fix); a traceback is shown
only with ``neuroxai --debug ...`` (or ``NEUROXAI_DEBUG=1``). Exit 1 means only "a method FAILed".
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import NeuroXAIError, named_error

if TYPE_CHECKING:
    from .report.schema import Results

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  pretty_exceptions_enable=False,
                  help="Validate explanation methods (GradCAM, LRP, SmoothGrad, ...) on 3-D brain-MRI models "
                       "against known-signal ground truth.\n\nStart with [bold]neuroxai demo[/bold].")
console = Console()
err = Console(stderr=True)

#: width of ``--help`` when stdout is not a terminal (CI logs, pipes): rich would cut it at 80
HELP_WIDTH_NOT_TTY = 160


def _not_a_terminal() -> bool:
    """stdout is a pipe or a file and no width was asked for (``COLUMNS`` / ``TERMINAL_WIDTH``)."""
    return not console.is_terminal and not (os.environ.get("COLUMNS") or os.environ.get("TERMINAL_WIDTH"))


if _not_a_terminal():  # CI logs: --help is not cut at 80 columns
    try:
        import typer.rich_utils as _rich_utils

        _rich_utils.MAX_WIDTH = _rich_utils.MAX_WIDTH or HELP_WIDTH_NOT_TTY
    except (ImportError, AttributeError):  # pragma: no cover - a typer without rich help
        pass


def show(renderable) -> None:
    """Print a table: on a terminal at its width; elsewhere (CI logs, pipes) as wide as its content,
    so method and metric names are never cut (rich assumes 80 columns without a terminal)."""
    if not _not_a_terminal():
        console.print(renderable)
        return
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update_width(10_000), renderable).maximum
    # print(width=) is capped at the console's width: a console of the content's width instead
    Console(width=max(console.width, need)).print(renderable)


_DEBUG = {"on": os.environ.get("NEUROXAI_DEBUG", "") not in ("", "0")}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show the full traceback of an error")):
    """Validate explanation methods on 3-D brain-MRI models against known-signal ground truth."""
    # Set on every invocation, not only turned on: a second command in the same process (the
    # Python API, tests) must not inherit an earlier --debug.
    _DEBUG["on"] = debug or os.environ.get("NEUROXAI_DEBUG", "") not in ("", "0")


def _fail(exc: NeuroXAIError) -> None:
    err.print(f"[bold red]error:[/bold red] {exc}", markup=True, highlight=False)
    raise typer.Exit(2)


try:  # typer vendors click: its usage errors are typer._click's (click prints them itself, exit 2)
    from typer._click.exceptions import ClickException as _CLICK_ERRORS
except ImportError:  # pragma: no cover - older typer on click
    from click import ClickException as _CLICK_ERRORS


def _guarded(fn):
    """Every error is exit 2 with a message, never a traceback (unless --debug); 1 stays "FAIL"."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, _CLICK_ERRORS):
            raise  # click prints usage errors itself (exit 2)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]: finished stages are kept; rerun with --resume to continue")
            raise typer.Exit(130)
        except Exception as exc:  # noqa: BLE001 - the one place that turns any error into exit 2
            if _DEBUG["on"]:
                err.print_exception(show_locals=False)
            named = named_error(exc)
            if named is not None:
                _fail(named)
            err.print(f"[bold red]error:[/bold red] {type(exc).__name__}: {exc}\n"
                      "  this input or situation has no named check yet; rerun with "
                      "[bold]neuroxai --debug ...[/bold] for the traceback and report it", highlight=False)
            raise typer.Exit(2)
    return wrapper


def _verdict_table(results: Results) -> Table:
    t = Table(title=f"{results.protocol.id} v{results.protocol.version} — overall {results.overall.verdict}")
    for c in ("task", "method", "verdict", "main metric", "mean [95% CI]", "chance", "p vs random", "p vs null"):
        t.add_column(c)
    colors = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "yellow"}
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    pfmt = lambda v: "—" if v is None else (f"{v:.1e}" if v < 1e-3 else f"{v:.3f}")  # noqa: E731

    def p_used(cmp) -> float | None:
        return None if cmp is None else cmp.p_used

    for m in results.methods:
        met = results.main_metric(m) or None  # the one rule, shared with the HTML report
        r = m.metrics.get(met) if met else None
        if r is None:
            t.add_row(m.task, m.method, f"[{colors[m.verdict]}]{m.verdict}[/]", met or "—", "—", "—", "—", "—")
            continue
        t.add_row(m.task, m.method, f"[{colors[m.verdict]}]{m.verdict}[/]", met,
                  f"{fmt(r.mean)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}]", fmt(r.chance),
                  pfmt(p_used(r.comparisons.get("chance_map"))), pfmt(p_used(r.comparisons.get("null_model"))))
    return t


def _run(protocol: str, out: Path, data: Optional[Path], model: Optional[str], *, quiet: bool,
         device: Optional[str] = None, weights: Optional[Path] = None, model_kwargs: Optional[Path] = None,
         trust_modules: tuple = (), export: Optional[Path] = None, epochs: Optional[int] = None,
         max_test_subjects: Optional[int] = None, stop_after: Optional[str] = None) -> int:
    from .progress import RichProgress
    from .protocol.runner import run_protocol
    from .report.build import threshold_note

    try:
        with RichProgress(quiet=quiet) as prog:
            res = run_protocol(protocol, out, manifest=str(data) if data else None,
                               checkpoint=str(model) if model else None, weights=str(weights) if weights else None,
                               model_kwargs=str(model_kwargs) if model_kwargs else None, device=device,
                               trust_modules=tuple(trust_modules), progress=prog, export=export,
                               epochs=epochs, max_test_subjects=max_test_subjects, stop_after=stop_after)
    except NeuroXAIError as exc:
        _fail(exc)
    if stop_after:
        console.print(f"stopped after the {stop_after} stage: {res.run_dir} (continue with --resume)")
        return 0
    if not quiet:
        show(_verdict_table(res.results))
        for task in res.results.tasks:
            perf = task.model
            if perf.auroc is not None:
                console.print(f"model on {task.id}: test AUROC {perf.auroc:.3f} "
                              f"[{perf.auroc_ci_low:.3f}, {perf.auroc_ci_high:.3f}]"
                              + ("  [bold red]AT CHANCE[/]" if perf.at_chance else ""), soft_wrap=True)
                note = threshold_note(perf)
                if note:
                    console.print(f"  [yellow]note[/]: {note}", soft_wrap=True)
    console.print(f"report: {res.report_dir / 'index.html' if res.report_dir else res.run_dir}")
    return res.exit_code


@app.command()
@_guarded
def demo(out: Path = typer.Option(Path("reports/demo"), help="run directory; the report goes to OUT/report"),
         export: Optional[Path] = typer.Option(None, "--export", help="also write the maps and ground-truth masks "
                                               "as NIfTI in a prior study's layout (BIDS derivatives), for "
                                               "`neuroxai audit`"),
         quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or tables")):
    """Build the embedded MNI152+AAL3 cohort, run [bold]protocols/quick.yaml[/bold], print the verdicts.

    Takes a few minutes on a laptop CPU. Re-running reuses finished stages. OUT must be new, empty
    or an earlier demo's folder: neuroxai never writes over files it did not create.
    Example: [cyan]neuroxai demo --out reports/demo[/cyan]
    """
    from .outdir import claim_dir

    claim_dir(out, "run", reuse=True)
    if export is not None:
        claim_dir(export, "export")  # before the run: never into a folder of someone else's files
    code = _run("quick", out, None, None, quiet=quiet, export=export)
    if export is not None:
        console.print(f"maps and masks for `neuroxai audit`: {export / 'derivatives'}")
    # The demo succeeded if it produced a verdict; FAIL and INCONCLUSIVE verdicts are findings, not errors.
    raise typer.Exit(0 if code in (0, 1, 3) else code)


@app.command()
@_guarded
def validate(protocol: str = typer.Argument(..., help="protocol YAML, or a shipped name (`neuroxai protocols`)"),
             data: Optional[Path] = typer.Option(None, "--data", help="manifest CSV or BIDS folder"),
             model: Optional[str] = typer.Option(None, "--model", help="evaluate this model instead of training: a "
                                                 "neuroxai checkpoint, a TorchScript/.pt2 file, or pkg.module:Class"),
             weights: Optional[Path] = typer.Option(None, "--weights", help="state_dict file for --model pkg.module:Class"),
             model_kwargs: Optional[Path] = typer.Option(None, "--model-kwargs", help="YAML of constructor kwargs for --model pkg.module:Class"),
             out: Path = typer.Option(Path("runs/run"), "--out", help="run directory"),
             resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out; stages "
                                         "whose inputs changed (model file, images, settings) are recomputed"),
             trust_module: Optional[List[str]] = typer.Option(
                 None, "--trust-module", help="let the protocol's model.checkpoint 'pkg.module:Class' import "
                 "this module (repeatable); a protocol never imports code without it"),
             device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
             export: Optional[Path] = typer.Option(None, "--export", help="also write the maps and "
                                                   "ground-truth masks as NIfTI (BIDS derivatives) for `neuroxai audit`"),
             epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="train for N epochs instead of the "
                                                  "protocol's: a cut-down run (the report's protocol says so)"),
             max_test_subjects: Optional[int] = typer.Option(None, "--max-test-subjects", min=1, help="score at most "
                                                             "N test subjects per task (a cut-down run)"),
             stop_after: Optional[str] = typer.Option(None, "--stop-after", help="stop after a stage: data, tasks, "
                                                      "store (subjects on the model grid), train or attribute; "
                                                      "--resume continues from there"),
             quiet: bool = typer.Option(False, "--quiet", "-q")):
    """Run a validation protocol: exit 0 = all methods pass, 1 = some fail, 2 = error.

    Example: [cyan]neuroxai validate siegel2025 --data study/manifest.csv --model sfcn.pt --out runs/s25[/cyan]
    A prior study's model: [cyan]--model mypkg.nets:Net --weights best.pth --model-kwargs net.yaml[/cyan]
    """
    from .outdir import claim_dir

    if stop_after not in (None, "data", "tasks", "store", "train", "attribute"):
        raise typer.BadParameter("one of data, tasks, store, train, attribute", param_hint="--stop-after")
    from .protocol.schema import load_protocol

    load_protocol(protocol)  # every setting checked before a folder is created or a file read
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 checks
        from .protocol.rundir import finished_no_stage

        # never into someone else's files, nor over a run unasked; a run that failed before finishing
        # any stage (e.g. a protocol error) holds nothing to keep: its corrected rerun reuses the folder
        claim_dir(out, "run", reuse=resume or finished_no_stage(out))
        if export is not None:
            claim_dir(export, "export")
    raise typer.Exit(_run(protocol, out, data, model, quiet=quiet, device=device, weights=weights,
                          model_kwargs=model_kwargs, trust_modules=tuple(trust_module or ()), export=export,
                          epochs=epochs, max_test_subjects=max_test_subjects, stop_after=stop_after))


@app.command()
@_guarded
def audit(maps: Path = typer.Option(..., "--maps", help="maps: one folder per method, one flat folder, or BIDS "
                                    "derivatives (sub-*/anat/*_desc-<method>_saliency.nii.gz)"),
          masks: Path = typer.Option(..., "--masks", help="ground-truth masks: sub-*_..._mask.nii.gz (or "
                                     "*_desc-<label>_mask / *_dseg with --label), matched by subject"),
          protocol: str = typer.Option("audit", "--protocol", help="acceptance criteria, metrics and statistics "
                                       "(default: the shipped audit.yaml)"),
          brain_mask: Optional[Path] = typer.Option(None, "--brain-mask", help="one NIfTI or a folder per subject "
                                                    "(in the masks' space)"),
          brain_mask_desc: Optional[str] = typer.Option(None, "--brain-mask-desc", help="in a --brain-mask folder "
                                                        "with several masks per subject: use the desc-<LABEL> ones "
                                                        "(default: desc-brain)"),
          anat: Optional[Path] = typer.Option(None, "--anat", help="anatomical image(s) for the figures (masks' space)"),
          anat_suffix: Optional[str] = typer.Option(None, "--anat-suffix", help="in an --anat folder (e.g. a BIDS "
                                                    "dataset): use the *_<SUFFIX>.nii.gz images (default: T1w)"),
          transform: Optional[Path] = typer.Option(None, "--transform", help="affine from the masks' space to the "
                                                   "maps' (ITK/ANTs .mat or .txt, or a 4×4 text matrix in RAS mm)"),
          grid: str = typer.Option("mask", "--grid", help="score on each subject's 'mask' grid (maps trilinear) or "
                                   "'map' grid (masks nearest neighbour)"),
          grid_check: bool = typer.Option(True, "--grid-check/--no-grid-check", help="when maps and masks are on "
                                          "different grids, also score on the other grid and report the method "
                                          "order on both (twice the scoring time)"),
          mask_threshold: Optional[float] = typer.Option(None, "--mask-threshold", min=0.0,
                                                         help="mask voxels > this are in the mask (probabilistic "
                                                         "masks; default: the protocol's data.mask_threshold)"),
          mask_desc: Optional[str] = typer.Option(None, "--mask-desc", help="which desc-<label>_mask to use"),
          atlas: Optional[Path] = typer.Option(None, "--atlas", help="atlas label image in the masks' space (one file "
                                               "or a folder per subject): adds the region-rank read-out"),
          labels_tsv: Optional[Path] = typer.Option(None, "--labels", help="TSV of atlas index<TAB>name"),
          true_region: Optional[List[str]] = typer.Option(None, "--true-region", help="the atlas region(s) carrying "
                                                          "the signal (name or index; default: the label holding "
                                                          "most of each subject's mask)"),
          label: Optional[List[int]] = typer.Option(None, "--label", help="with *_dseg masks: the label value(s) "
                                                   "that form the ground truth (repeatable)"),
          out: Path = typer.Option(Path("runs/audit"), "--out", help="new or empty folder (or an earlier audit)"),
          device: str = typer.Option("cpu", help="cpu | cuda"),
          quiet: bool = typer.Option(False, "--quiet", "-q")):
    """Re-evaluate a prior study: its saved maps against masks, no model. Same verdicts and report as validate.

    Exit 0 = every method passes, 1 = some fail, 2 = error.
    Example: [cyan]neuroxai audit --maps study/derivatives/xai --masks study/derivatives/lesions --out runs/audit[/cyan]
    """
    from rich.progress import Progress

    from .protocol.audit import run_audit

    with Progress(console=err, disable=quiet) as p:
        tid = p.add_task("audit", total=None)
        res = run_audit(maps, masks, out, protocol=protocol, brain_mask=brain_mask, anat=anat, transform=transform,
                        grid=grid, mask_threshold=mask_threshold, mask_desc=mask_desc, labels=list(label or []) or None,
                        atlas=atlas, atlas_labels=labels_tsv, true_region=list(true_region or []) or None,
                        device=device, progress=lambda i, n: p.update(tid, completed=i, total=n),
                        brain_mask_desc=brain_mask_desc, anat_suffix=anat_suffix, check_grid=grid_check)
    if not quiet:
        show(_verdict_table(res.results))
        orders = (res.results.data.grid or {}).get("orders")
        if orders and orders["same_order"] is False:
            console.print("[yellow]grid[/]: the method order by " + orders["metric"] + " depends on the grid: "
                          + "; ".join(f"{g}: {' > '.join(ms)}" for g, ms in orders["order"].items())
                          + " (methods that swap places are not separable on these data)", soft_wrap=True)
        flags = res.results.audit.flags
        for f in flags[:10]:
            console.print(f"[yellow]flag[/]: {f.method} {f.subject_id}: {f.flag}", soft_wrap=True, highlight=False)
        if len(flags) > 10:
            console.print(f"[yellow]flag[/]: … and {len(flags) - 10} more (report, results.json)")
    console.print(f"report: {res.report_dir / 'index.html' if res.report_dir else res.run_dir}")
    raise typer.Exit(res.exit_code)


@app.command()
@_guarded
def report(run_dir: Path = typer.Argument(..., help="a run directory holding results.json")):
    """Rebuild the HTML/JSON/CSV report of a finished run."""
    from .report import rebuild_report

    try:
        console.print(f"report: {rebuild_report(run_dir)}")
    except NeuroXAIError as exc:
        _fail(exc)


@app.command()
@_guarded
def protocols(show: Optional[str] = typer.Option(None, "--show", help="print this protocol (a shipped name or a "
                                                 "path) with every key's type, default and meaning")):
    """Describe the shipped protocols; [bold]--show NAME[/bold] prints one, annotated.

    Every key is documented in docs/protocol.md (generated from the schema).
    Example: [cyan]neuroxai protocols --show quick[/cyan]
    """
    if show is not None:
        from .protocol.reference import annotated_protocol

        sys.stdout.write(annotated_protocol(show))
        return
    from .protocol.schema import PROTOCOL_DIR, list_protocols

    for p in list_protocols():
        console.print(f"[bold]{p.id}[/bold] v{p.version} ({p.kind}) — {p.title}", soft_wrap=True, highlight=False)
        if p.description:
            console.print("  " + " ".join(p.description.split()), highlight=False, soft_wrap=True)
        if p.tasks:
            console.print("  tasks: " + ", ".join(f"{t.id} ({t.type})" for t in p.tasks), highlight=False, soft_wrap=True)
        if p.methods:
            console.print("  methods: " + ", ".join(m.key for m in p.methods), highlight=False, soft_wrap=True)
        console.print("  criteria: " + "; ".join(c.describe() for c in p.acceptance), highlight=False, soft_wrap=True)
        console.print(f"  file: {PROTOCOL_DIR / (p.id + '.yaml')}  hash {p.content_hash()[:12]}\n", highlight=False, soft_wrap=True)
    console.print("annotated: [cyan]neuroxai protocols --show NAME[/cyan]; every key: docs/protocol.md")


@app.command()
@_guarded
def cohort(out: Path = typer.Option(..., "--out", help="destination folder (BIDS-like + manifest.csv)"),
           n: int = typer.Option(200, "--n", help="number of subjects"),
           spacing: float = typer.Option(2.0, "--spacing", help="voxel size in mm"),
           seed: int = typer.Option(0, "--seed")):
    """Write the embedded synthetic cohort (MNI152 + AAL3; regional volume changes, lesions).

    Example: [cyan]neuroxai cohort --n 400 --spacing 2 --out data/cohort[/cyan]
    """
    from rich.progress import Progress

    from .data.cohort import generate_cohort

    with Progress(console=err) as p:
        tid = p.add_task("cohort", total=n)
        path = generate_cohort(out, n=n, spacing=spacing, seed=seed, progress=lambda i, k: p.update(tid, completed=i))
    console.print(f"manifest: {path}")


@app.command("check-manifest")
@_guarded
def check_manifest(path: Path = typer.Argument(..., help="manifest CSV or BIDS folder")):
    """Validate a manifest (all problems at once) and summarize it."""
    from .data.manifest import load_manifest

    try:
        df = load_manifest(path)
    except NeuroXAIError as exc:
        _fail(exc)
    console.print(f"[green]ok[/green]: {len(df)} subjects; columns: {', '.join(df.columns)}")


@app.command()
@_guarded
def info(path: Optional[Path] = typer.Argument(None, help="a NIfTI file to describe"),
         regions: bool = typer.Option(False, "--regions", help="list the AAL3 region names")):
    """Describe a NIfTI file (shape, spacing, orientation), or list atlas regions."""
    if regions:
        from .data.cohort import atlas_labels

        for name, v in atlas_labels().items():
            console.print(f"{v:4d} {name}")
        return
    if path is None:
        raise typer.BadParameter("give a NIfTI path or --regions")
    from .data import load_volume

    try:
        v = load_volume(path, canonical=False)
    except NeuroXAIError as exc:
        _fail(exc)
    d = v.data
    console.print(f"{path}: shape {tuple(v.shape)}, spacing {tuple(round(s, 3) for s in v.spacing)} mm, "
                  f"orientation {v.orientation}, range [{float(d.min()):.3g}, {float(d.max()):.3g}]", soft_wrap=True)


@app.command()
@_guarded
def bench(project: int = typer.Option(45000, "--project", help="subjects to project GPU-hours for"),
          device: str = typer.Option("auto"), shape: str = typer.Option("96,112,96"),
          batch: int = typer.Option(4)):
    """Measure per-volume cost of GradCAM, LRP, SmoothGrad and scoring; project a study's GPU-hours."""
    import torch

    from .bench import measure, parse_bench_args, project as proj
    from .models import MODELS

    dims, batch = parse_bench_args(shape, batch)  # a named error before any tensor exists
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    res = measure(MODELS["sfcn"](), dims, batch, device=dev)
    t = Table(title=f"per-volume cost on {res.device}, SFCN, {res.shape}, batch {res.batch}")
    for c in ("step", "s / volume", "× plain fwd+bwd pass"):
        t.add_column(c)
    t.add_row("plain pass (floor)", f"{res.floor_s_per_volume:.4f}", "1.00")
    for k, v in res.methods_s_per_volume.items():
        t.add_row(k, f"{v:.4f}", f"{v / res.floor_s_per_volume:.2f}")
    t.add_row("scoring (3 metrics)", f"{res.scoring_s_per_volume:.4f}", f"{res.scoring_s_per_volume / res.floor_s_per_volume:.2f}")
    show(t)
    pj = proj(res, project)
    console.print(f"{project} subjects × {pj['n_tasks']} tasks, all methods + scoring + model randomization: "
                  f"{pj['gpu_hours']:.1f} device-hours; wall-clock on 1 / 8 devices: "
                  f"{pj['wall_hours']['1']:.1f} h / {pj['wall_hours']['8']:.1f} h "
                  f"(scoring {100 * pj['scoring_fraction']:.1f} % of attribution)", soft_wrap=True)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except NeuroXAIError as exc:  # pragma: no cover - commands catch their own
        err.print(f"[bold red]error:[/bold red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
