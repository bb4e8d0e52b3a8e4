"""The audit report: self-contained HTML, the verdict table and CSVs equal the results, schema,
byte-identical rebuilds, figure placement, and a headless-Chromium render."""
from __future__ import annotations

import base64
import hashlib
import csv
import importlib.util
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuroxai.errors import RunError
from neuroxai.report import Results, build_report, rebuild_report, validate_results
from neuroxai.report.figure_inputs import FigureInputs
from neuroxai.report.figures import slice_centre
from neuroxai.report.scores import ScoreTable
from neuroxai.report.screenshot import find_chromium, screenshot

_spec = importlib.util.spec_from_file_location("neuroxai_test_report_fixtures",
                                               Path(__file__).with_name("_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]


class _Page(HTMLParser):
    """Collects every attribute, the <img> sources, and the cells of table#verdicts' body rows."""

    def __init__(self):
        super().__init__()
        self.attrs, self.imgs, self.tags = [], [], []
        self.rows, self._in_verdicts, self._in_body, self._cell = [], False, False, None
        self.at_chance_text, self._in_warn = [], 0
        self.banner_class = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "table" and a.get("id") == "verdicts":
            self._in_verdicts = True
        if self._in_verdicts and tag == "tbody":
            self._in_body = True
        if self._in_body and tag == "tr":
            self.rows.append([])
        if self._in_body and tag == "td":
            self._cell = ""
        if tag == "div" and "at-chance" in (a.get("class") or "").split():
            self._in_warn += 1
            self.at_chance_text.append("")
        if tag == "div" and a.get("id") == "overall":
            self.banner_class = a.get("class")

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_verdicts = self._in_body = False
        if tag == "td" and self._cell is not None:
            self.rows[-1].append(self._cell.strip())
            self._cell = None
        if tag == "div" and self._in_warn:
            self._in_warn -= 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_warn:
            self.at_chance_text[-1] += data


def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    results, figures = fx.make_results(), fx.make_figures()
    out = tmp_path_factory.mktemp("report")
    index = build_report(results, figures, out)
    return results, figures, out, index


def test_writes_every_file(built):
    results, _, out, index = built
    assert index == out / "index.html"
    for name in ("index.html", "results.json", "results.schema.json", "summary.csv", "scores.csv"):
        assert (out / name).is_file(), name
    # 2 overlays (mean + example) + 2 metrics + 1 randomization on task 1; task 2 has no maps.
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == sorted(
        ["hippocampus_volume_mean_maps.png", "hippocampus_volume_example.png",
         "hippocampus_volume_relevance_mass_accuracy_distribution.png",
         "hippocampus_volume_auroc_distribution.png", "hippocampus_volume_randomization.png",
         "lesion_relevance_mass_accuracy_distribution.png", "lesion_auroc_distribution.png",
         "lesion_randomization.png"])
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))
    assert isinstance(results, Results)
    # the report's results.json is the results, plus where the score table now is (beside it)
    written = Results.model_validate_json((out / "results.json").read_text())
    assert written.scores.file == "scores.parquet" and (out / "scores.parquet").is_file()
    assert written.scores.n_rows == 2 * 3 * fx.N * 2 * 3
    assert written.scores.sha256 == hashlib.sha256((out / "scores.parquet").read_bytes()).hexdigest()
    assert written.model_copy(update={"scores": None}).model_dump() == results.model_dump()
    assert (out / "results.json").read_text() == written.to_json()
    # every key the fixture gave is written with its value (the rest are the schema's defaults)
    written, given = json.loads((out / "results.json").read_text()), fx.results_dict()
    assert _holds(written, given)
    assert not _holds(written, fx.with_changes(given, lambda r: r["methods"][2]["metrics"]["auroc"].update(n=7)))


def _holds(written, given) -> bool:
    """Every key of ``given``, at any depth, is in ``written`` with the same value."""
    if isinstance(given, dict):
        return isinstance(written, dict) and all(k in written and _holds(written[k], v) for k, v in given.items())
    if isinstance(given, list):
        return isinstance(written, list) and len(written) == len(given) and all(map(_holds, written, given))
    return written == given


def test_html_is_self_contained(built):
    _, _, out, index = built
    page = _parse(index)
    html = index.read_text(encoding="utf-8")
    # No resource can be fetched: no scripts, stylesheets, frames; no URL in any attribute or CSS.
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(page.tags)
    for tag, k, v in page.attrs:
        assert not re.match(r"\s*(https?:)?//", v), (tag, k, v[:80])
    assert "url(" not in html and "@import" not in html
    # The only http(s) text is the plain-text data credit.
    assert fx.CREDITS.split("see ")[1].split(";")[0] in html
    assert len(re.findall(r"https?://", html)) == 1
    # Every image is an inline PNG whose bytes equal the written figure file.
    assert len(page.imgs) == 8
    files = {p.read_bytes() for p in (out / "figures").glob("*.png")}
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == PNG_MAGIC
        assert raw in files


def _expected_rows(results):
    def f(v):
        return "—" if v is None else f"{v:.3f}"

    def p(c):
        if not c:
            return "—"
        return "< 0.001" if c.p_adjusted < 0.001 else f"{c.p_adjusted:.3f}"

    rows = []
    for m in results.methods:
        x = m.metrics["relevance_mass_accuracy"]  # the acceptance criteria's metric
        s = m.sanity
        rows.append([m.task, m.method, m.verdict, "relevance_mass_accuracy",
                     f"{f(x.mean)} [{f(x.ci_low)}, {f(x.ci_high)}]", f(x.chance), f(x.oracle_mean),
                     "—" if x.scaled_mean is None else
                     f"{f(x.scaled_mean)} [{f(x.scaled_ci_low)}, {f(x.scaled_ci_high)}]",
                     p(x.comparisons.get("chance_map")), p(x.comparisons.get("null_model")),
                     "—" if s is None else f"{'pass' if s.passed else 'fail'} "
                                           f"({f(s.final_similarity)} vs {f(s.threshold)})",
                     "baseline (floor)" if m.is_baseline else "under test"])
    return rows


def test_verdict_table_equals_the_method_entries(built):
    results, _, _, index = built
    rows = _parse(index).rows
    assert rows == _expected_rows(results)
    # Literal checks of the formatting on hand-picked numbers of the fixture.
    by = {(r[0], r[1]): r for r in rows}
    assert by[("hippocampus_volume", "gradcam")][2] == "PASS"
    assert by[("hippocampus_volume", "gradcam")][8:10] == ["< 0.001", "0.004"]  # 2.5e-4, 0.0041
    assert by[("hippocampus_volume", "lrp")][2] == "FAIL"
    assert by[("hippocampus_volume", "lrp")][8:10] == ["0.023", "0.200"]  # 0.0234, 0.2
    assert by[("hippocampus_volume", "lrp")][10] == "fail (0.620 vs 0.500)"
    assert by[("hippocampus_volume", "random")][8:11] == ["—", "—", "—"]
    assert [r[2] for r in rows if r[0] == "lesion"] == ["INCONCLUSIVE"] * 3
    assert by[("hippocampus_volume", "gradcam")][5] == "0.050"


def test_criteria_marks_and_banner(built):
    results, _, _, index = built
    html = index.read_text(encoding="utf-8")
    n_true = sum(c.passed is True and c.applicable for m in results.methods for c in m.criteria)
    n_false = sum(c.passed is False and c.applicable for m in results.methods for c in m.criteria)
    assert html.count('<span class="ok">✓</span>') == n_true
    assert html.count('<span class="bad">✗</span>') == n_false
    # By hand: gradcam/hippocampus 4 ✓; lrp/hippocampus 4 ✗; random 2 ✗ per task (CI, cannot beat
    # itself; its null-model and randomization rows are n/a); gradcam/lesion 1 ✓ (randomization),
    # 3 ✗; lrp/lesion 4 ✗.
    assert (n_true, n_false) == (5, 15)
    page = _parse(index)
    assert page.banner_class == "banner FAIL"
    assert "Overall verdict: FAIL" in html


def test_at_chance_warning_only_where_the_model_is_at_chance(built, tmp_path):
    _, _, _, index = built
    warns = _parse(index).at_chance_text
    assert warns and all("chance" in w for w in warns)
    assert any("lesion" in w for w in warns)
    assert not any("hippocampus_volume" in w for w in warns)

    def fine(r):
        for t in r["tasks"]:
            t["model"]["at_chance"] = False
        r["overall"] = {"verdict": "PASS", "n_pass": 4, "n_fail": 0, "n_inconclusive": 0, "exit_code": 0}

    ok = fx.with_changes(fx.make_results(), fine)
    page = _parse(build_report(ok, None, tmp_path))
    assert page.at_chance_text == []
    assert page.banner_class == "banner PASS"


def test_summary_csv_equals_results(built):
    results, _, out, _ = built
    rows = list(csv.DictReader((out / "summary.csv").open(encoding="utf-8")))
    assert len(rows) == sum(len(m.metrics) for m in results.methods) == 12
    it = iter(rows)
    for m in results.methods:
        for met, x in m.metrics.items():
            r = next(it)
            assert (r["task"], r["method"], r["metric"], r["verdict"]) == (m.task, m.method, met, m.verdict)
            for k in ("mean", "ci_low", "ci_high", "chance", "normalized_mean", "median"):
                assert float(r[k]) == getattr(x, k), k  # written at full precision
            assert int(r["n"]) == x.n
            for comp, col in (("chance_map", "random"), ("null_model", "null_model")):
                c = x.comparisons.get(comp)
                for suffix, key in (("", "p"), ("_adjusted", "p_adjusted")):
                    cell = r[f"p_vs_{col}{suffix}"]
                    assert (cell == "") if c is None else (float(cell) == getattr(c, key))


def test_scores_csv_equals_results(built):
    results, _, out, _ = built
    rows = list(csv.DictReader((out / "scores.csv").open(encoding="utf-8")))
    sc = fx.scores_frame()
    assert len(rows) == len(sc) == 2 * 3 * fx.N * 2 * 3
    assert list(rows[0]) == ["task", "subject_id", "method", "metric", "value"]
    for i in (0, 17, len(rows) - 1):
        assert rows[i]["subject_id"] == sc["subject_id"][i]
        assert float(rows[i]["value"]) == sc["value"][i]
    # the Parquet table beside results.json holds the same rows, in the same order
    back = pd.read_parquet(out / "scores.parquet")
    pd.testing.assert_frame_equal(back[list(sc.columns)], sc, check_dtype=False)


def test_rebuild_is_byte_identical(built, tmp_path):
    results, figures, out, index = built
    run = tmp_path / "run"
    run.mkdir()
    # the JSON form a writer might give: fixture key order, no default keys; its table beside it
    ref = ScoreTable.from_frame(fx.scores_frame()).write(run / "scores.parquet")
    (run / "results.json").write_text(json.dumps({**fx.results_dict(), "scores": ref.model_dump()}))
    np.savez(run / "figures.npz", **fx.flatten_figures(figures))  # the layout runs before format 2 wrote
    loaded = FigureInputs.load(run / "figures.npz")
    assert loaded.tasks["hippocampus_volume"].example.subject_id == "sub-007"
    assert loaded.tasks["hippocampus_volume"].spacing == (4.0, 4.0, 4.0)
    np.testing.assert_array_equal(loaded.tasks["hippocampus_volume"].maps["lrp"],
                                  figures["tasks"]["hippocampus_volume"]["maps"]["lrp"])
    again = rebuild_report(run)
    assert again == run / "report" / "index.html"
    assert again.read_bytes() == index.read_bytes()
    for name in ("results.json", "summary.csv", "scores.csv", "scores.parquet"):
        assert (run / "report" / name).read_bytes() == (out / name).read_bytes(), name
    for p in (out / "figures").glob("*.png"):
        assert (run / "report" / "figures" / p.name).read_bytes() == p.read_bytes(), p.name


def test_rebuild_without_results_names_the_fix(tmp_path):
    with pytest.raises(RunError, match="no results.json") as e:
        rebuild_report(tmp_path)
    assert "neuroxai validate" in str(e.value)


def test_missing_figure_parts_are_skipped(tmp_path):
    results, figures = fx.make_results(), fx.make_figures()
    t = figures["tasks"]["hippocampus_volume"]
    del t["mask"], t["example"]  # overlay without contour, no example figure
    page = _parse(build_report(results, figures, tmp_path / "a"))
    assert len(page.imgs) == 7
    no_scores = fx.with_changes(results, lambda r: r.update(scores=None))  # no table attached
    page = _parse(build_report(no_scores, None, tmp_path / "b"))
    assert len(page.imgs) == 2  # only the randomization curves remain
    assert not (tmp_path / "b" / "scores.csv").exists() and not (tmp_path / "b" / "scores.parquet").exists()


def test_stale_figures_are_removed_on_rebuild(tmp_path):
    results = fx.make_results()
    build_report(results, fx.make_figures(), tmp_path)
    assert (tmp_path / "figures" / "hippocampus_volume_mean_maps.png").exists()
    build_report(results, None, tmp_path)
    assert not (tmp_path / "figures" / "hippocampus_volume_mean_maps.png").exists()


def test_text_is_escaped(tmp_path):
    def evil(r):
        r["methods"][0]["method"] = '<script>alert("x")</script>'
        r["protocol"]["title"] = "<b onload=x>"

    html = build_report(fx.with_changes(fx.make_results(), evil), None, tmp_path).read_text()
    assert "<script>" not in html and "<b onload" not in html
    assert "&lt;script&gt;" in html


def test_schema_accepts_results_and_names_the_bad_key(built):
    results, _, out, _ = built
    validate_results(results)
    validate_results(json.loads((out / "results.json").read_text()))
    example = REPO / "reports" / "example" / "results.json"
    if example.is_file():  # the committed example report from `make demo`
        validate_results(json.loads(example.read_text()))
    bad = fx.with_changes(results, lambda r: r["methods"][1].update(verdict="MAYBE"))
    with pytest.raises(RunError, match=r"methods\.1\.verdict"):
        validate_results(bad)
    bad = fx.with_changes(results, lambda r: r["methods"][0]["metrics"]["auroc"].pop("ci_low"))
    with pytest.raises(RunError, match=r"methods\.0\.metrics\.auroc\.ci_low"):
        validate_results(bad)
    bad = fx.results_dict_1x()  # a 1.x file whose embedded table is broken: named, not read
    bad["scores"]["value"].pop()
    with pytest.raises(RunError, match="scores"):
        validate_results(bad)
    bad = fx.with_changes(results, lambda r: r["methods"][0].update(task="nope"))
    with pytest.raises(RunError, match="not one of tasks"):
        build_report(bad, None, out / "never")
    bad = fx.with_changes(results, lambda r: r.update(schema_version="3.0"))
    with pytest.raises(RunError, match="schema_version"):
        validate_results(bad)
    schema = json.loads((out / "results.schema.json").read_text())
    assert set(schema["required"]) >= {"schema_version", "protocol", "methods", "overall"}


def test_slice_centre():
    m = np.zeros((12, 12, 12), np.float32)
    m[2:5, 6:9, 4:7] = 1.0  # a cube centred on (3, 7, 5)
    assert slice_centre(m, m.shape) == (3, 7, 5)
    m[:] = 0
    m[1:3, 5:8, 5:8] = 1.0  # two blobs: x centre of mass 6 lies between them
    m[9:11, 5:8, 5:8] = 1.0
    c = slice_centre(m, m.shape)
    assert c[1:] == (6, 6)
    assert c[0] in (1, 2, 9, 10)  # a sagittal plane that cuts a blob, not the empty midline
    assert slice_centre(np.zeros((12, 10, 8)), (12, 10, 8)) == (6, 5, 4)


def test_report_imports_no_higher_layer():
    code = ("import sys, neuroxai.report, neuroxai.report.screenshot; "
            "print([m for m in sys.modules if m.startswith(('neuroxai.models', "
            "'neuroxai.attribution', 'neuroxai.protocol', 'torch'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


_BROWSER_HOSTS = re.compile(r"https?://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gstatic\.com|"
                            r"gvt1\.com|chromium\.org)(/|:|$)")


def _page_urls(net_log: Path) -> set[str]:
    """http(s) URLs in a Chromium net log, less the browser's own background requests."""
    urls = set(re.findall(r'"url":"(https?://[^"]+)"', net_log.read_text(errors="replace")))
    return {u for u in urls if not _BROWSER_HOSTS.match(u)}


@pytest.mark.skipif(find_chromium() is None, reason="no chromium / google-chrome on PATH")
def test_renders_in_headless_chromium_without_network(built, tmp_path):
    _, _, _, index = built
    shot, log = tmp_path / "shot.png", tmp_path / "net.json"
    assert screenshot(index, shot, net_log=log)
    import matplotlib.pyplot as plt

    img = plt.imread(shot)[..., :3]
    assert img.shape[:2] == (2400, 1280)
    assert img.var() > 0
    rgb = np.round(img * 255).astype(int)
    # The verdict table's cells are drawn: PASS green, FAIL red, INCONCLUSIVE amber backgrounds.
    for colour in ((0xD9, 0xF2, 0xD9), (0xF8, 0xD7, 0xD7), (0xFF, 0xF0, 0xC2)):
        assert (np.abs(rgb - colour).sum(-1) <= 3).sum() > 200, colour
    assert _page_urls(log) == set()
    # The check can fail: a page with a remote image does show up in the log.
    ctrl = tmp_path / "ctrl.html"
    ctrl.write_text('<html><body><img src="https://example.org/a.png"></body></html>')
    assert screenshot(ctrl, tmp_path / "ctrl.png", window=(200, 200), net_log=tmp_path / "ctrl.json")
    assert "https://example.org/a.png" in _page_urls(tmp_path / "ctrl.json")


def test_subjects_to_inspect_are_best_median_worst(built):
    from neuroxai.report.build import inspect_rows

    results = built[0]
    sc = fx.scores_frame().to_dict(orient="list")
    rows = {(r["task"], r["method"]): r for r in inspect_rows(results)}
    assert len(rows) == 6
    sel = [i for i in range(len(sc["value"])) if sc["task"][i] == "hippocampus_volume"
           and sc["method"][i] == "lrp" and sc["metric"][i] == "relevance_mass_accuracy"]
    v = np.array([sc["value"][i] for i in sel])
    order = np.argsort(-v, kind="stable")
    r = rows[("hippocampus_volume", "lrp")]
    assert r["best"] == f"{sc['subject_id'][sel[order[0]]]} ({v.max():.3f})"
    assert r["worst"] == f"{sc['subject_id'][sel[order[-1]]]} ({v.min():.3f})"
    assert r["median"].endswith(f"({v[order[(len(v) - 1) // 2]]:.3f})")
    assert f"<td>{r['best']}</td>" in built[3].read_text(encoding="utf-8")


def test_results_json_is_one_canonical_text_whichever_serializer_writes_it():
    from neuroxai.report.schema import _canonical_json

    r = fx.make_results()
    r.methods[0].metrics["auroc"].mean = float("nan")
    r.methods[1].metrics["auroc"].median = float("inf")
    text = r.to_json()  # pydantic's serializer
    assert text == _canonical_json(r.model_dump(mode="python"))  # the Python one
    back = json.loads(text)
    assert back["methods"][0]["metrics"]["auroc"]["mean"] is None and back["methods"][1]["metrics"]["auroc"]["median"] is None
    assert list(back) == sorted(back) and text.endswith("}\n")
    r.provenance.__pydantic_extra__["threads"] = np.int64(2)  # an open part with a NumPy scalar
    assert json.loads(r.to_json())["provenance"]["threads"] == 2


def test_the_report_reads_the_metric_facts_the_run_recorded(built):
    """An old run's report does not change when the registry does: the help text and the
    direction come from results.metric_facts (a recorded lower-is-better direction flips the
    best and worst subjects)."""
    from neuroxai.report.build import inspect_rows
    from neuroxai.report.schema import MetricFacts

    results = built[0]
    met = "relevance_mass_accuracy"
    assert results.facts(met).higher_is_better  # the registry's, for a fixture without recorded facts
    before = {(r["task"], r["method"]): r for r in inspect_rows(results)}
    flipped = results.model_copy(update={"metric_facts": {met: MetricFacts(
        higher_is_better=False, help="HELP AS RECORDED", chance="CHANCE AS RECORDED")}})
    after = {(r["task"], r["method"]): r for r in inspect_rows(flipped)}
    k = ("hippocampus_volume", "lrp")
    assert after[k]["best"] == before[k]["worst"] and after[k]["worst"] == before[k]["best"]
    from neuroxai.report.build import _metric_help

    assert _metric_help(flipped, met) == ("HELP AS RECORDED", "CHANCE AS RECORDED")
