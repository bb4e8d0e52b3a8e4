"""The audit report: self-contained HTML (figures inlined as PNG data URIs), plus results.json,
summary.csv (task × method × metric) and scores.csv (one row per subject × method × metric)."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..errors import RunError
from . import figures as figs

TEMPLATES = Path(__file__).parent / "templates"
MAX_FIGURE_METHODS = 8


def _atomic_write(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def _f(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else (f"{v:.3f}" if isinstance(v, (int, float)) else str(v))


def _p(c) -> str:
    if not c:
        return "—"
    v = c.get("p_adjusted", c.get("p"))
    return "—" if v is None else (f"{v:.2e}" if v < 1e-3 else f"{v:.3f}")


def summary_rows(results: dict) -> list[dict]:
    rows = []
    for m in results["methods"]:
        for met, x in m["metrics"].items():
            cmp = x.get("comparisons", {})
            rows.append({"task": m["task"], "method": m["method"], "metric": met, "mean": x["mean"],
                         "ci_low": x["ci_low"], "ci_high": x["ci_high"], "chance": x["chance"],
                         "normalized_mean": x["normalized_mean"], "n": x["n"],
                         "p_vs_random": cmp.get("random", {}).get("p_adjusted"),
                         "p_vs_null_model": cmp.get("null_model", {}).get("p_adjusted"),
                         "verdict": m["verdict"]})
    return rows


def _csv(rows: list[dict], cols: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()


def _figures(results: dict, figures: dict) -> list[dict]:
    out = []
    for tid, t in (figures or {}).get("tasks", {}).items():
        maps = dict(list(t.get("maps", {}).items())[:MAX_FIGURE_METHODS])
        if "image" in t and "mask" in t and maps:
            out.append({"name": f"{tid}_mean_maps", "alt": f"cohort-mean maps on {tid}",
                        "caption": f"{tid}: cohort-mean maps (each subject's map scaled to unit positive mass) "
                                   "over the mean image; cyan: where the ground truth lies in ≥ half the subjects.",
                        "png": figs.overlays(t["image"], t["mask"], maps, f"{tid} — cohort mean")})
        ex = t.get("example") or {}
        if ex.get("maps") and "image" in ex:
            out.append({"name": f"{tid}_example", "alt": f"example subject on {tid}",
                        "caption": f"{tid}: one test subject ({ex.get('subject_id', '')}); cyan: its ground truth.",
                        "png": figs.overlays(ex["image"], ex["mask"], dict(list(ex["maps"].items())[:MAX_FIGURE_METHODS]),
                                             f"{tid} — subject {ex.get('subject_id', '')}")})
    sc = results.get("scores") or {}
    if sc:
        import pandas as pd

        df = pd.DataFrame(sc)
        for (tid, met), g in df.groupby(["task", "metric"], sort=True):
            if met.endswith("_chance") or met.endswith("_norm") or tid.endswith("__null"):
                continue
            vals = {m: gg["value"].to_numpy() for m, gg in g.groupby("method", sort=False)}
            ch = df[(df.task == tid) & (df.metric == f"{met}_chance")]["value"]
            out.append({"name": f"{tid}_{met}_distribution", "alt": f"{met} per subject on {tid}",
                        "caption": f"{tid}: {met} per test subject and method; dashed: chance.",
                        "png": figs.distributions(vals, float(ch.mean()) if len(ch) else None, met)})
    for tid in sorted({m["task"] for m in results["methods"]}):
        curves = {m["method"]: m["sanity"] for m in results["methods"] if m["task"] == tid and m.get("sanity")}
        if curves:
            out.append({"name": f"{tid}_randomization", "alt": f"model randomization on {tid}",
                        "caption": f"{tid}: similarity of each method's maps to the original as layers are "
                                   "randomized from the output down (Adebayo et al. 2018).",
                        "png": figs.randomization(curves)})
    return out


def _flat_prov(prov: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in prov.items():
        if isinstance(v, dict):
            out += _flat_prov(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v if not isinstance(v, float) else f"{v:.3f}"))
    return out


def build_report(results: dict, figures: dict | None, out_dir: str | Path) -> Path:
    """Write the report into ``out_dir``; returns the path of ``index.html``."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rendered = _figures(results, figures or {})
    for fig in rendered:
        _atomic_write(out / "figures" / f"{fig['name']}.png", fig["png"])
        fig["b64"] = base64.b64encode(fig["png"]).decode()
    metrics = [m["name"] for m in results["protocol"]["spec"].get("metrics", [])]
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        r=results, figures=rendered, main_metric=metrics[0] if metrics else "",
        f=_f, p=_p, prov=_flat_prov(results.get("provenance", {})))
    _atomic_write(out / "index.html", html)
    _atomic_write(out / "results.json", json.dumps(results, indent=1, default=str))
    cols = ["task", "method", "metric", "mean", "ci_low", "ci_high", "chance", "normalized_mean", "n",
            "p_vs_random", "p_vs_null_model", "verdict"]
    _atomic_write(out / "summary.csv", _csv(summary_rows(results), cols))
    sc = results.get("scores") or {}
    if sc:
        keys = list(sc)
        rows = [dict(zip(keys, vals)) for vals in zip(*[sc[k] for k in keys])]
        _atomic_write(out / "scores.csv", _csv(rows, keys))
    return out / "index.html"


def rebuild_report(run_dir: str | Path) -> Path:
    """Rebuild ``RUN_DIR/report`` from ``results.json`` (+ ``figures.npz``) of a finished run."""
    run = Path(run_dir)
    res = run / "results.json"
    if not res.is_file():
        raise RunError("no results.json in the run directory", path=run, expected="a finished run",
                       found="missing", fix="finish the run first: neuroxai validate ... --resume")
    results = json.loads(res.read_text())
    figures = None
    if (run / "figures.npz").is_file():
        from ..protocol.figures_input import load_figure_inputs

        figures = load_figure_inputs(run / "figures.npz")
    return build_report(results, figures, run / "report")
