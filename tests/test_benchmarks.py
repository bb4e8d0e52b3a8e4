"""The benchmarks run in CI size (``--quick``) and report real numbers: a floor, every method as a
multiple of it, and our maps equal to the peers' where both compute the same quantity."""
from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _main(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # a dataclass looks its module up while the module is being run
    spec.loader.exec_module(mod)
    return mod.main


def test_attribution_benchmark_quick_reports_ratios_and_matching_maps(capsys):
    assert _main("bench_attribution")(["--quick"]) == 0
    out = capsys.readouterr().out
    floor = float(re.search(r"floor \(plain fwd\+bwd to input\): ([0-9.]+) s", out).group(1))
    assert floor > 0
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and "implementation" not in line]
    impls = {(r[0].split()[0], r[1]) for r in rows}
    for method in ["gradient", "smoothgrad", "gradcam", "gradcam_pp", "IG", "occlusion", "lrp"]:
        assert (method, "neuroxai") in impls, method
    assert ("lrp", "Zennit EpsilonPlusFlat") in impls and ("gradcam", "MONAI GradCAM") in impls
    for method, impl, sec, x_floor, vols, x_ours, rel in rows:
        assert math.isfinite(float(sec)) and float(sec) > 0
        assert float(x_floor) > 0 and float(vols) > 0 and float(x_ours) > 0
        if rel:  # same quantity computed by the peer: the maps agree
            assert float(rel) < 1e-5, (method, impl, rel)
    compared = [r for r in rows if r[6]]
    assert len(compared) >= 5  # gradient, gradcam ×2, IG, occlusion, LRP


def test_scoring_benchmark_quick_matches_quantus(capsys):
    assert _main("bench_scoring")(["--quick"]) == 0
    out = capsys.readouterr().out
    ratio = float(re.search(r"ratio quantus / neuroxai: ([0-9.]+)x", out).group(1))
    diff = float(re.search(r"max \|difference\| of scores: ([0-9.e+-]+)\)", out).group(1))
    assert ratio > 0 and diff < 1e-5


def test_attribution_benchmark_quick_times_the_study_methods_beside_their_references(capsys):
    only = ["deeplift", "deeplift_mean", "input_x_gradient", "guided_backprop", "guided_gradcam", "gradcam_block",
            "hirescam", "eigencam", "lrp:epsilon_alpha2_beta1_flat", "lrp_densenet", "lrp_resnet"]
    assert _main("bench_attribution")(["--quick", "--only", *only]) == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and "implementation" not in line]
    impls = {(r[0], r[1]) for r in rows}
    for method, peer in [("deeplift zeros", "Captum DeepLift"), ("input_x_gradient", "Captum InputXGradient"),
                         ("guided_backprop", "Captum GuidedBackprop"), ("guided_gradcam", "Captum GuidedGradCam"),
                         ("lrp epsilon_alpha2_beta1_flat", "Zennit epsilon_alpha2_beta1_flat"),
                         ("deeplift mean image", "Captum DeepLift"), ("gradcam layer 4", "Captum LayerGradCam"),
                         ("lrp epsilon_plus_flat DenseNet (toy)", "Zennit EpsilonPlusFlat + canonizer"),
                         ("lrp epsilon_plus_flat torchvision-style ResNet", "Zennit EpsilonPlusFlat + canonizer")]:
        assert (method, "neuroxai") in impls and (method, peer) in impls, method
    assert ("hirescam", "neuroxai") in impls and ("eigencam", "neuroxai") in impls
    for method, impl, sec, x_floor, vols, x_ours, rel in rows:
        # × floor is printed to 2 decimals: a CAM at CI size can round to 0.00 on a loaded machine
        assert math.isfinite(float(sec)) and float(sec) > 0 and float(x_floor) >= 0
        if rel:
            assert float(rel) < 1e-5, (method, impl, rel)
    # DeepLift's note: ours sums to f(x) − f(x'), whatever Captum's hook order does
    ours_gap = float(re.search(r"summation-to-delta error \(\|Σmap − Δf\| / \|Δf\|\) ours ([0-9.e+-]+)", out).group(1))
    assert ours_gap < 1e-4
    mean_gap = float(re.search(r"deeplift mean image: .*summation-to-delta error ours ([0-9.e+-]+)", out).group(1))
    assert mean_gap < 1e-4
    # the LRP-through-architecture rows are compared with Zennit (a diff is printed) on their own floor
    assert {r[0] for r in rows if r[6]} >= {"lrp epsilon_plus_flat DenseNet (toy)",
                                           "lrp epsilon_plus_flat torchvision-style ResNet", "gradcam layer 4"}


def test_results_stage_benchmark_judges_a_streamed_table_into_a_small_results_json(tmp_path, capsys):
    """The synthetic study of ``bench_results_stage`` at CI size: the table is written chunk by
    chunk beside a results.json that holds no per-subject row, and the verdicts follow the
    synthetic levels (SmoothGrad and the gradient well above the threshold, GradCAM below; LRP's
    level sits at the threshold, which 300 subjects cannot decide)."""
    import pandas as pd

    res, out = _main("bench_results_stage")(["--subjects", "300", "--bootstrap", "200", "--out", str(tmp_path)])
    assert {m.method: m.verdict for m in res.methods} == {
        "gradcam": "FAIL", "lrp": "INCONCLUSIVE", "smoothgrad": "PASS", "gradient": "PASS", "random": "FAIL", "oracle": "PASS"}
    assert (out / "results.json").stat().st_size < 60_000  # summaries only, whatever the number of subjects
    assert res.scores.n_rows == 300 * 6 * 9
    table = pd.read_parquet(out / "scores.parquet")
    assert len(table) == 300 * 6 * 9 and table["subject_id"].nunique() == 300
    assert "peak RSS" in capsys.readouterr().out
