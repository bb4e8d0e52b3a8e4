"""Time every localization metric of ``neuroxai.scoring.score`` against Quantus 0.6 on the same maps.

    .venv/bin/python benchmarks/bench_scoring.py [--n-volumes 256] [--shape 182 218 182] [--batch 8]
        [--device cpu] [--metrics auroc pointing_game ...] [--quantus-volumes 8] [--no-brain-mask] [--quick]

Data: ``--n-volumes`` synthetic maps on the MNI 1 mm grid (182×218×182 by default), generated
batch by batch (``--batch``) from a per-volume seed, so that at most one batch is ever in memory
and every volume is the same whoever scores it. Volume i: uniform noise in [0, 1) plus a boost
``U(0.05, 0.6)`` inside an ellipsoidal "lesion" (the ground-truth mask) placed at random inside an
ellipsoidal brain mask (~1.9 M voxels at 1 mm, shared by all volumes). ``region_rank`` gets a
synthetic block parcellation of the brain (6×7×6 blocks, ~150 regions, AAL3-like count), its
"true region" being the block holding the lesion centre.

Ours: one ``score(attr, mask, {metric: params}, brain_mask)`` call per metric and batch, on tensors
already on ``--device`` (synchronized), after one untimed warm-up on a single volume; then all the
compared metrics in one ``score()`` call, as the runner scores (the rank-based metrics then share
one sort per volume). Per-volume time = total time over all volumes / ``--n-volumes``.

Quantus (NumPy, CPU) is timed per metric on the first ``--quantus-volumes`` of the SAME volumes,
fed in the same batches: its metrics loop over samples (or vectorize over a batch of per-sample
NumPy arrays), so their cost is linear in the number of volumes and its per-volume time measured on
a subset carries over. Quantus has no brain mask, so it gets the in-brain voxels of each volume
(``(B, 1, 1, N_brain)`` float32; its localization metrics ignore voxel order and a voxel outside
the brain mask takes no part in our metrics either) — with ``--no-brain-mask`` the whole volume
reshaped to ``(B, 1, D·H, W)``. All Quantus metrics run with ``abs=False, normalise=False``.
Ratio = Quantus ms/volume / ours ms/volume; ``max abs diff`` is the largest difference of the
scores on the shared volumes. ``--quick`` (CI size) is run by ``tests/test_benchmarks.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOP_K = 0.05  # top_k_intersection: fraction of the brain voxels
BLOCKS = (6, 7, 6)  # synthetic parcellation for region_rank
SEED = 20240611

# our metric -> (Quantus class name, kwargs, region Quantus scores against, note)
#   region: "mask" = the ground-truth mask, "bbox" = its bounding box.
QUANTUS = {
    "relevance_mass_accuracy": ("RelevanceMassAccuracy", {}, "mask",
                                "same definition on non-negative maps (Quantus divides by Σa incl. negatives)"),
    "relevance_rank_accuracy": ("RelevanceRankAccuracy", {}, "mask",
                                "same; tie-breaking at the K-th voxel may differ (Quantus: unstable argsort)"),
    "top_k_intersection": ("TopKIntersection", {"k": None}, "mask",
                           f"same with Quantus k = round({TOP_K}·N_brain) voxels; tie-breaking as rank accuracy"),
    "auroc": ("AUC", {}, "mask", "same (sklearn roc_curve + auc, per-sample loop)"),
    "pointing_game": ("PointingGame", {}, "mask",
                      "same for a unique maximum (ties: ours 'average', Quantus 'any'); tolerance 0 mm"),
    "energy_pointing_game": ("AttributionLocalisation", {"positive_attributions": True}, "bbox",
                             "same: Σ_box a⁺ / Σ a⁺, Quantus fed the mask's bounding box (+1e-9 in its denominator)"),
}
NOT_COMPARED = {
    "average_precision": "no Quantus counterpart",
    "region_rank": "no Quantus counterpart (synthetic block atlas)",
    "false_positive": "no Quantus counterpart (Siegel et al. 2025's test)",
    "region_match": "no Quantus counterpart (synthetic block atlas; Siegel et al. 2025)",
    "rank_biased_overlap": "no Quantus counterpart (synthetic block atlas, reference = blocks 1-3)",
}


def default_metrics() -> list[str]:
    """Every registered metric that can be fed from (map, mask) — plus the atlas metrics
    (``region_rank``, ``region_match``, ``rank_biased_overlap``), fed the synthetic atlas."""
    from neuroxai.scoring import METRICS
    names = list(METRICS.names())
    order = list(QUANTUS) + list(NOT_COMPARED)
    return [n for n in order if n in names] + sorted(set(names) - set(order))


class Volumes:
    """Deterministic synthetic volumes: ``batch(i0, i1)`` builds volumes ``i0 … i1-1`` (CPU)."""

    def __init__(self, shape, brain_mask: bool = True):
        D, H, W = self.shape = tuple(shape)
        self.grid = [torch.arange(n, dtype=torch.float32).view(*[-1 if j == i else 1 for j in range(3)])
                     for i, n in enumerate(self.shape)]
        self.centre = torch.tensor([(n - 1) / 2 for n in self.shape])
        self.dims = torch.tensor(self.shape, dtype=torch.float32)
        if brain_mask:
            self.brain = self._ellipsoid(self.centre, 0.4 * self.dims)
        else:
            self.brain = torch.ones(self.shape, dtype=torch.bool)
        # block parcellation of the brain, labels 1..R consecutive (0 = outside)
        bid = torch.zeros(self.shape, dtype=torch.long)
        for i, (n, k) in enumerate(zip(self.shape, BLOCKS)):
            idx = (torch.arange(n) * k // n).view(*[-1 if j == i else 1 for j in range(3)])
            bid = bid * k + idx
        bid = torch.where(self.brain, bid + 1, 0)
        _, inv = torch.unique(bid, return_inverse=True)
        self.atlas = (inv if bool((bid == 0).any()) else inv + 1).to(torch.int16)
        self.n_regions = int(self.atlas.max())

    def _ellipsoid(self, c, r):
        zz, yy, xx = self.grid
        return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1

    def one(self, i: int):
        g = torch.Generator().manual_seed(SEED + 7919 * i)
        u = torch.rand(8, generator=g)
        c = self.centre + (u[:3] - 0.5) * 0.3 * self.dims  # centre within ±15 % of the brain centre
        r = torch.clamp((0.06 + 0.06 * u[3:6]) * self.dims, min=1.5)  # 6–12 % of each dimension
        m = self._ellipsoid(c, r) & self.brain
        if not bool(m.any()):  # (tiny grids) keep one voxel
            m[tuple(int(round(float(x))) for x in c)] = True
        a = torch.rand(self.shape, generator=g)
        a.add_(m, alpha=float(0.05 + 0.55 * u[6]))
        lab = int(self.atlas[tuple(int(round(float(x))) for x in c)])
        if lab == 0:
            lab = int(self.atlas[m].max())
        # per-volume atlas: the block holding the lesion centre gets label 1 (swapped with 1)
        at = self.atlas
        at = torch.where(at == lab, 1, torch.where(at == 1, lab, at)).to(torch.int16)
        return a, m, at

    def batch(self, i0, i1):
        vs = [self.one(i) for i in range(i0, i1)]
        a = torch.stack([v[0] for v in vs])[:, None]
        m = torch.stack([v[1] for v in vs])[:, None]
        at = torch.stack([v[2] for v in vs])[:, None]
        return a, m, at


def _bbox_np(m: np.ndarray) -> np.ndarray:
    """Axis-aligned bounding box of a 3-D bool mask, as a bool mask (NumPy)."""
    out = np.zeros_like(m)
    idx = np.nonzero(m)
    out[tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in idx)] = True
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-volumes", type=int, default=256)
    ap.add_argument("--shape", type=int, nargs=3, default=[182, 218, 182])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--metrics", nargs="+", default=None, help="default: every metric (see NOT_COMPARED)")
    ap.add_argument("--quantus-volumes", type=int, default=8,
                    help="Quantus is timed on the first N of the same volumes (its cost is linear in N)")
    ap.add_argument("--no-brain-mask", action="store_true", help="score whole volumes (no brain mask)")
    ap.add_argument("--quick", action="store_true",
                    help="CI size: 4 volumes of 16×20×16 in batches of 2, Quantus on 2")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_volumes, args.shape, args.batch, args.quantus_volumes = 4, [16, 20, 16], 2, 2

    try:
        import torchvision  # noqa: F401
    except Exception:  # zennit/quantus need a torchvision import; the tests' stub provides it
        sys.path.insert(0, str(ROOT / "tests" / "_stubs"))
    import quantus

    from neuroxai.scoring import METRICS, score

    t_run = time.perf_counter()
    metrics = args.metrics or default_metrics()
    for name in metrics:
        METRICS[name]  # unknown -> ConfigError, before any work
    N, B, NQ = args.n_volumes, args.batch, min(args.quantus_volumes, args.n_volumes)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    vols = Volumes(args.shape, brain_mask=not args.no_brain_mask)
    D, H, W = vols.shape
    brain_np = vols.brain.numpy()
    n_brain = int(brain_np.sum())
    brain_d = None if args.no_brain_mask else vols.brain[None, None].to(dev)

    def params(name, atlas_d):
        if name == "top_k_intersection":
            return {"k": TOP_K}
        if name in ("region_rank", "region_match"):  # the metrics that need an atlas get the blocks
            return {"atlas": atlas_d, "true_region": [1]}
        if name == "rank_biased_overlap":
            return {"atlas": atlas_d, "reference": [1, 2, 3]}
        return {}

    def to_quantus(x: np.ndarray) -> np.ndarray:  # (b, D, H, W) -> Quantus layout, float32
        if args.no_brain_mask:
            return np.ascontiguousarray(x.reshape(x.shape[0], 1, D * H, W), dtype=np.float32)
        return np.ascontiguousarray(x[:, brain_np][:, None, None, :], dtype=np.float32)

    q_metrics = [n for n in metrics if n in QUANTUS]
    t_ours = {n: 0.0 for n in metrics}
    t_one = 0.0  # the compared metrics in one score() call, as the runner calls it
    t_q = {n: 0.0 for n in q_metrics}
    ours_first: dict[str, list] = {n: [] for n in metrics}
    q_scores: dict[str, list] = {n: [] for n in q_metrics}
    means: dict[str, list] = {n: [] for n in metrics}

    # warm-up (kernels, allocator, lazy imports) on one volume, untimed
    a, m, at = vols.batch(0, 1)
    a_d, m_d, at_d = a.to(dev), m.to(dev), at.to(dev)
    for name in metrics:
        score(a_d, m_d, {name: params(name, at_d)}, brain_d)
    del a, m, at, a_d, m_d, at_d

    for i0 in range(0, N, B):
        i1 = min(i0 + B, N)
        a, m, at = vols.batch(i0, i1)
        a_d, m_d, at_d = a.to(dev), m.to(dev), at.to(dev)
        for name in metrics:
            p = params(name, at_d)
            sync()
            t = time.perf_counter()
            out = score(a_d, m_d, {name: p}, brain_d)
            sync()
            t_ours[name] += time.perf_counter() - t
            s = out[name].cpu().numpy()
            means[name].append(s)
            if i0 < NQ:
                ours_first[name].append(s[: NQ - i0])
            del out
        if q_metrics:
            sync()
            t = time.perf_counter()
            score(a_d, m_d, {name: params(name, at_d) for name in q_metrics}, brain_d)
            sync()
            t_one += time.perf_counter() - t
        if i0 < NQ:  # Quantus on the shared volumes of this batch
            nq = min(i1, NQ) - i0
            a_np, m_np = a[:nq, 0].numpy(), m[:nq, 0].numpy()
            a_q, y_q = to_quantus(a_np), np.zeros(nq, int)
            x_q = np.zeros_like(a_q)  # the input images, which the user already has
            s_q = {"mask": to_quantus(m_np)}
            if "energy_pointing_game" in q_metrics:
                s_q["bbox"] = to_quantus(np.stack([_bbox_np(mm) for mm in m_np]))
            for name in q_metrics:
                cls_name, kw, region, _ = QUANTUS[name]
                kw = dict(kw)
                if name == "top_k_intersection":
                    kw["k"] = int(round(TOP_K * n_brain))
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")  # (and AttributionLocalisation's printed abs=False note)
                    metric = getattr(quantus, cls_name)(abs=False, normalise=False, disable_warnings=True,
                                                        display_progressbar=False, **kw)
                    t = time.perf_counter()
                    r = metric(model=None, x_batch=x_q, y_batch=y_q, a_batch=a_q.copy(),
                               s_batch=s_q[region].copy(), channel_first=True, batch_size=B)
                    t_q[name] += time.perf_counter() - t
                q_scores[name].append(np.asarray(r, dtype=np.float64))
            del a_np, m_np, a_q, x_q, s_q
        del a, m, at, a_d, m_d, at_d

    t_all = time.perf_counter() - t_run
    ours_total = sum(t_ours.values())
    threads = torch.get_num_threads()
    mode = ("whole volumes, no brain mask" if args.no_brain_mask
            else f"brain mask {n_brain} voxels ({100 * n_brain / (D * H * W):.0f} %)")
    print(f"maps: {N} volumes of {D}x{H}x{W} float32 ({mode}), batches of {B}; ours on {dev}, "
          f"torch threads: {threads}; Quantus {quantus.__version__} (NumPy, cpu) on the first {NQ} of the same volumes")
    print(f"ours, all {len(metrics)} metrics on all {N} volumes: {ours_total:.1f} s in score() "
          f"({ours_total / N * 1e3:.1f} ms/volume); whole run incl. data generation and Quantus: {t_all:.1f} s")
    print(f"Quantus's per-volume cost was measured on {NQ} volumes (a per-sample loop: linear in the number "
          f"of volumes; {N} volumes would take ≈ {sum(t_q.values()) / max(NQ, 1) * N:.0f} s)")
    print()
    print("| metric | Quantus counterpart | ours ms/volume | Quantus ms/volume | ratio | max abs diff | mean score | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    diffs, q_sum, o_sum = [], 0.0, 0.0
    for name in metrics:
        o_ms = t_ours[name] / N * 1e3
        mean = float(np.nanmean(np.concatenate(means[name])))
        if name in QUANTUS:
            cls_name, _, _, note = QUANTUS[name]
            q_ms = t_q[name] / NQ * 1e3
            d = float(np.max(np.abs(np.concatenate(ours_first[name]) - np.concatenate(q_scores[name]))))
            diffs.append(d)
            q_sum, o_sum = q_sum + q_ms, o_sum + o_ms
            print(f"| {name} | {cls_name} | {o_ms:.1f} | {q_ms:.1f} | {q_ms / o_ms:.1f}x | {d:.1e} | {mean:.4f} | {note} |")
        else:
            note = NOT_COMPARED.get(name, "no Quantus counterpart")
            print(f"| {name} | — | {o_ms:.1f} | — | — | — | {mean:.4f} | not compared: {note} |")
    if q_sum:
        one_ms = t_one / N * 1e3
        print()
        print(f"compared metrics ({len(diffs)}), each in its own score() call: {o_sum:.1f} ms/volume ours vs "
              f"{q_sum:.1f} ms/volume Quantus = {q_sum / o_sum:.2f}x")
        print(f"compared metrics ({len(diffs)}) in one score() call (as the runner scores; one sort per volume "
              f"shared by the rank metrics): {one_ms:.1f} ms/volume ours vs {q_sum:.1f} ms/volume Quantus; "
              f"ratio quantus / neuroxai: {q_sum / one_ms:.2f}x   (max |difference| of scores: {max(diffs):.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
