"""Peak memory of a whole `neuroxai validate` run against the number of subjects.

Each run is a separate process (`neuroxai validate`, embedded cohort: generation, loading onto the
model grid, training, attribution, scoring, report); its peak resident memory is the operating
system's own figure (``ru_maxrss`` of the finished child — the largest single process, DataLoader
workers included). The limits of issue 15: the N = 400 run may use at most 1.2× the N = 100 run's
peak and at most 300 MB more.

    python benchmarks/bench_memory.py --n 100 400 --spacing 2            # the issue's benchmark
    python benchmarks/bench_memory.py --protocol siegel2025 --n 2000 --spacing 1.5 --fresh \\
        --stop-after store                                              # the study's data stages

Cohorts are generated once per (n, spacing) under --cache and reused (their generation is then
not part of the measured run; pass --fresh to include it).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ONE_METHOD = textwrap.dedent("""
    id: memory-bench
    version: "1"
    data: {{source: embedded, cohort: {{n: {n}, spacing_mm: {spacing}, seed: 0}}}}
    tasks:
      - id: hippocampus_volume
        type: region_volume
        params: {{regions: [Hippocampus_L, Hippocampus_R], target: classification, ground_truth: signal_support}}
        null_control: false
    model: {{architecture: small_cnn, training: {{epochs: 1, batch_size: 8, lr: 0.003, seed: 0}}}}
    methods:
      - name: gradient
    metrics:
      - name: relevance_rank_accuracy
    statistics: {{bootstrap: 200, seed: 0}}
    sanity: {{model_randomization: {{enabled: false}}}}
    validity: {{enabled: false}}
    acceptance:
      - {{kind: ci_above_chance, metric: relevance_rank_accuracy, margin: 0.0}}
    run: {{device: cpu, batch_size: 8, save_maps: none, seed: 0}}
""")


def run_once(args, n: int, root: Path) -> dict:
    out = root / f"run-{args.protocol or 'one-method'}-{n}-{args.spacing}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cmd = [str(Path(sys.executable).parent / "neuroxai")]
    if args.protocol:
        proto = args.protocol
        extra = ["--data", str(_cohort(args, n, root))] if not args.fresh else []
    else:
        p = root / f"proto-{n}-{args.spacing}.yaml"
        p.write_text(ONE_METHOD.format(n=n, spacing=args.spacing))
        proto, extra = str(p), []
        if not args.fresh:
            extra = ["--data", str(_cohort(args, n, root))]
    cmd += ["--debug", "validate", proto, "--out", str(out), "--quiet", *extra]
    # the run's own output is not needed: --quiet, and stdout/stderr go to a log
    if args.max_epochs is not None:
        cmd += ["--epochs", str(args.max_epochs)]
    if args.max_test_subjects is not None:
        cmd += ["--max-test-subjects", str(args.max_test_subjects)]
    if args.stop_after:
        cmd += ["--stop-after", args.stop_after]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    # A wrapper process per run: its RUSAGE_CHILDREN peak is this run's alone (the largest single
    # process among the run and its DataLoader workers).
    wrap = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrap, *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    try:
        peak_kb, code = (int(x) for x in proc.stdout.strip().splitlines()[-1].split())
    except (IndexError, ValueError):
        raise SystemExit(f"run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    proc.returncode = code
    if proc.returncode not in (0, 1):
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    timings = {}
    rj = out / "run.json"
    res = out / "results.json"
    if res.is_file():
        timings = json.loads(res.read_text())["provenance"].get("timings_s", {})
    store = sorted(out.glob("stages/store/*/index.json"))
    disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2 ** 30 if out.exists() else 0.0
    return {"n": n, "spacing_mm": args.spacing, "peak_rss_mb": peak_kb / 1024, "wall_s": wall,
            "run_dir_gb": round(disk, 2), "store_complete": bool(store),
            "timings_s": {k: round(v, 1) for k, v in timings.items()}, "run_json": str(rj)}


def _cohort(args, n: int, root: Path) -> Path:
    """The embedded cohort as files (generated once), so the measured run reads a manifest."""
    from neuroxai.data.cohort import generate_cohort

    d = Path(args.cache) / f"cohort-{n}-{args.spacing}"
    t = time.perf_counter()
    path = generate_cohort(d, n=n, spacing=args.spacing, seed=0)
    print(f"cohort n={n} at {args.spacing} mm: {time.perf_counter() - t:.0f} s ({d})", file=sys.stderr)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--spacing", type=float, default=2.0)
    ap.add_argument("--protocol", default=None, help="a shipped protocol instead of the one-method one")
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--max-test-subjects", type=int, default=None)
    ap.add_argument("--stop-after", default=None, help="data | tasks | store | train | attribute")
    ap.add_argument("--cache", default="/tmp/neuroxai-bench-memory")
    ap.add_argument("--fresh", action="store_true", help="generate the cohort inside the measured run")
    args = ap.parse_args()
    root = Path(args.cache)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sorted(args.n):
        r = run_once(args, n, root)
        rows.append(r)
        print(json.dumps(r), flush=True)
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"peak RSS N={b['n']} / N={a['n']}: {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x, "
              f"+{b['peak_rss_mb'] - a['peak_rss_mb']:.0f} MB (limits: 1.2x and +300 MB)")


if __name__ == "__main__":
    main()
