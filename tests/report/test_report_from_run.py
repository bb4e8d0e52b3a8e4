"""The audit report: self-contained, faithful to results.json, deterministic, screenshot-able."""
from __future__ import annotations

import base64
import csv
import re
import shutil
import subprocess

import pytest

from neuroxai.protocol.runner import run_protocol
from neuroxai.protocol.schema import load_protocol
from neuroxai.report import rebuild_report


@pytest.fixture(scope="module")
def run(tiny_protocol, tmp_path_factory):
    return run_protocol(load_protocol(tiny_protocol), tmp_path_factory.mktemp("run") / "r")


def test_html_is_self_contained_with_png_figures(run):
    html = (run.report_dir / "index.html").read_text()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    imgs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(imgs) >= 4  # mean maps, example subject, distributions, randomization
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_map_figures_are_drawn_from_the_run(run):
    """The overlays read the attribute stage's chunks: a stage key computed differently after the
    run (as once happened) silently dropped them while the other figures kept the count up."""
    names = {p.name for p in (run.report_dir / "figures").glob("*.png")}
    assert {"hippo_mean_maps.png", "hippo_example.png"} <= names, names


def test_verdict_table_matches_results(run):
    html = (run.report_dir / "index.html").read_text()
    table = html[html.index('id="verdicts"'):html.index("</table>", html.index('id="verdicts"'))]
    rows = re.findall(r'<tr class="row"><td>([^<]+)</td><td>([^<]+)</td><td class="(\w+)">', table)
    expect = [(m.task, m.method, m.verdict) for m in run.results.methods]
    assert rows == expect
    m0 = run.results.methods[0].metrics["relevance_mass_accuracy"]
    assert f"{m0.mean:.3f} [{m0.ci_low:.3f}, {m0.ci_high:.3f}]" in table
    assert f'class="banner {run.results.overall.verdict}"' in html
    assert run.results.protocol.hash in html


def test_summary_csv_equals_results(run):
    with open(run.report_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    n = sum(len(m.metrics) for m in run.results.methods)
    assert len(rows) == n
    for r in rows:
        m = run.results.method(r["task"], r["method"])
        assert float(r["mean"]) == pytest.approx(m.metrics[r["metric"]].mean, rel=1e-12)
        assert r["verdict"] == m.verdict


def test_rebuild_is_byte_identical(run):
    before = (run.report_dir / "index.html").read_bytes()
    rebuild_report(run.run_dir)
    assert (run.report_dir / "index.html").read_bytes() == before


def test_at_chance_model_gets_a_warning(run, tmp_path):
    import json

    res = json.loads((run.run_dir / "results.json").read_text())
    res["tasks"][0]["model"]["at_chance"] = True
    d = tmp_path / "r"
    d.mkdir()
    (d / "results.json").write_text(json.dumps(res))
    html = rebuild_report(d).read_text()
    assert 'class="warn at-chance"' in html


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no headless chromium on this machine")
def test_report_renders_in_a_browser(run, tmp_path):
    png = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                    "--window-size=1280,2400", (run.report_dir / "index.html").as_uri()],
                   capture_output=True, timeout=120)
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert a.std() > 10  # not a blank page
