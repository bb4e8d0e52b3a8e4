"""Time ``neuroxai.scoring.score`` (3 metrics) against Quantus 0.6 on the same maps.

    .venv/bin/python benchmarks/bench_scoring.py [--batch 8] [--shape 64 80 64] [--device cpu] [--repeats 3] [--quick]

Quantus gets the volumes reshaped to ``(B, 1, D·H, W)`` (its localization metrics ignore voxel
order) as float32 NumPy, with ``abs=False, normalise=False``; we time ``score()`` on tensors already
on the device, synchronized. Best of ``--repeats`` runs each. ``--quick`` (CI size) is run by
``tests/test_benchmarks.py``.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

METRICS = ["relevance_mass_accuracy", "relevance_rank_accuracy", "auroc"]


def _best(fn, repeats, sync=lambda: None):
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 80, 64])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="CI size: batch 2 of 16×20×16, one repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.shape, args.repeats = 2, [16, 20, 16], 1

    try:
        import torchvision  # noqa: F401
    except Exception:  # zennit/quantus need a torchvision import; the tests' stub provides it
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "_stubs"))
    import quantus

    from neuroxai.scoring import score

    B, (D, H, W) = args.batch, args.shape
    g = torch.Generator().manual_seed(0)
    a = torch.rand(B, 1, D, H, W, generator=g)
    m = torch.zeros(B, 1, D, H, W, dtype=torch.bool)
    m[..., D // 4: D // 2, H // 4: H // 2, W // 4: W // 2] = True
    a = a + 0.3 * m
    dev = torch.device(args.device)
    a_d, m_d = a.to(dev), m.to(dev)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    ours_out = {}

    def ours():
        ours_out.update(score(a_d, m_d, METRICS))

    a2 = a.reshape(B, 1, D * H, W).numpy().astype(np.float32)
    s2 = m.reshape(B, 1, D * H, W).numpy().astype(np.float32)
    qm = {"relevance_mass_accuracy": quantus.RelevanceMassAccuracy, "relevance_rank_accuracy": quantus.RelevanceRankAccuracy,
          "auroc": quantus.AUC}
    q_out = {}

    def theirs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, cls in qm.items():
                metric = cls(abs=False, normalise=False, disable_warnings=True, display_progressbar=False)
                q_out[name] = np.asarray(metric(model=None, x_batch=np.zeros_like(a2), y_batch=np.zeros(B, int),
                                                a_batch=a2.copy(), s_batch=s2.copy(), channel_first=True))

    ours()  # warm-up (kernels, allocator)
    t_ours = _best(ours, args.repeats, sync)
    t_q = _best(theirs, args.repeats)
    dmax = max(float(np.abs(ours_out[k].cpu().numpy() - q_out[k]).max()) for k in METRICS)
    print(f"maps: B={B} {D}x{H}x{W}, metrics: {', '.join(METRICS)}, torch threads: {torch.get_num_threads()}")
    print(f"neuroxai score() on {dev}: {t_ours * 1e3:9.1f} ms  ({t_ours / B * 1e3:.1f} ms/volume)")
    print(f"quantus 0.6 (NumPy, cpu): {t_q * 1e3:9.1f} ms  ({t_q / B * 1e3:.1f} ms/volume)")
    print(f"ratio quantus / neuroxai: {t_q / t_ours:.2f}x   (max |difference| of scores: {dmax:.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
