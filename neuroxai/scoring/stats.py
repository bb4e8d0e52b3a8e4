"""Statistics over subjects: bootstrap CIs (percentile, BCa), paired tests, Holm correction.

Resampling is vectorized on the values' device: ``(n_boot, N)`` (or ``(n_perm, N)``) draws from a
seeded ``torch.Generator``, made in blocks of rows (:func:`draws`) so memory stays bounded at any
number of subjects (45,000 subjects × 2,000 resamples would be 720 MB of indices at once). The
blocks continue one generator stream, so the draws equal one whole draw and the same seed gives
the same interval.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import stats as sst

from ..errors import ConfigError, ScoringError

_F64 = torch.float64
log = logging.getLogger(__name__)


def _as_1d(values, name: str) -> tuple[torch.Tensor, bool]:
    """Flattened float64 values and whether they are all finite (a NaN score, e.g. AUROC of a
    whole-brain mask, makes the statistic undefined: the callers return NaN and log why)."""
    v = torch.as_tensor(values, dtype=_F64).flatten()
    ok = bool(torch.isfinite(v).all())
    if not ok:
        log.warning("%s: %d non-finite of %d values; the statistic is NaN (drop undefined scores first)",
                    name, int((~torch.isfinite(v)).sum()), v.numel())
    return v, ok


#: Elements of one block of resampling draws (32 MB of int64 indices).
BLOCK_ELEMENTS = 1 << 22


def draws(n_rows: int, n: int, gen: torch.Generator, high: int | None = None, block_elements: int | None = None):
    """``(rows, n)`` blocks of ``torch.randint(0, high or n, ...)`` over ``n_rows`` rows in all, drawn
    in turn from ``gen`` (each block at most ``block_elements`` values): the concatenated blocks equal
    one ``(n_rows, n)`` draw from the same generator state (the CPU generator's stream is sequential;
    ``tests/scoring/test_stats.py`` checks it). Yields ``(row slice, block)``."""
    per = max(1, (block_elements or BLOCK_ELEMENTS) // max(n, 1))
    for r0 in range(0, n_rows, per):
        r1 = min(n_rows, r0 + per)
        yield slice(r0, r1), torch.randint(0, high or n, (r1 - r0, n), generator=gen, device=gen.device)


def resample_means(v: torch.Tensor, n_boot: int, gen: torch.Generator) -> torch.Tensor:
    """``(n_boot,)`` means of ``v: (N,)`` over resamples of its entries with replacement, drawn in
    blocks (:func:`draws`)."""
    out = torch.empty(n_boot, dtype=v.dtype, device=v.device)
    for sl, idx in draws(n_boot, v.numel(), gen):
        out[sl] = v[idx].mean(1)
        del idx  # freed before the next block is drawn
    return out


def _check_bootstrap(level: float, n_boot: int) -> None:
    if not 0 < level < 1 or n_boot < 1:
        raise ConfigError("bootstrap level in (0, 1) and n_boot ≥ 1", expected="0 < level < 1, n_boot ≥ 1",
                          found={"level": level, "n_boot": n_boot})


def bootstrap_ci(values: torch.Tensor, n_boot: int = 2000, level: float = 0.95, method: str = "percentile",
                 seed: int = 0) -> tuple[float, float, float]:
    """Bootstrap confidence interval of the mean over subjects: ``(mean, low, high)`` floats.

    ``values: (N,)``. All resamples are drawn at once (one ``(n_boot, N)`` index tensor).

    ``method="percentile"``: the ``(1±level)/2`` quantiles (linear interpolation) of the bootstrap
    means (Efron & Tibshirani 1993, ch. 13). ``method="bca"``: bias-corrected and accelerated
    (Efron 1987, JASA 82:171): bias ``z0 = Φ⁻¹(#{θ* < θ̂} + #{θ* ≤ θ̂}) / 2B)`` (ties split, as
    ``scipy.stats.bootstrap``), acceleration ``a = Σd³ / (6 (Σd²)^{3/2})`` from the jackknife means
    ``d_i = θ̄₍·₎ − θ₍ᵢ₎``. With fewer than two values the interval is ``(nan, nan)``; a constant
    sample gives ``(mean, mean)``; NaN/Inf values give ``(nan, nan, nan)`` (logged).
    """
    if method not in ("percentile", "bca"):
        raise ConfigError("unknown bootstrap CI method", expected=["percentile", "bca"], found=repr(method))
    _check_bootstrap(level, n_boot)
    v, ok = _as_1d(values, "bootstrap values")
    n = v.numel()
    if n == 0 or not ok:
        return float("nan"), float("nan"), float("nan")
    est = float(v.mean())
    if n < 2:
        return est, float("nan"), float("nan")
    if bool((v == v[0]).all()):
        return est, est, est
    gen = torch.Generator(device=v.device).manual_seed(int(seed))
    boots = resample_means(v, n_boot, gen)
    alpha = (1 - level) / 2
    q = np.array([alpha, 1 - alpha])
    if method == "bca":
        theta = v.mean()
        prop = float(((boots < theta).sum() + (boots <= theta).sum()).double() / (2 * n_boot))
        z0 = sst.norm.ppf(prop)
        jack = (v.sum() - v) / (n - 1)
        d = jack.mean() - jack
        den = 6.0 * float((d ** 2).sum()) ** 1.5
        acc = float((d ** 3).sum()) / den if den > 0 else 0.0
        zs = sst.norm.ppf(q)
        q = sst.norm.cdf(z0 + (z0 + zs) / (1 - acc * (z0 + zs)))
        if not np.all(np.isfinite(q)):  # all resamples on one side of θ̂: BCa is undefined
            return est, float("nan"), float("nan")
    lo, hi = torch.quantile(boots, torch.as_tensor(q, dtype=_F64, device=v.device)).tolist()
    return est, lo, hi


def seed_subject_means(values: torch.Tensor, n_boot: int = 2000, seed: int = 0,
                       block: int = 256) -> torch.Tensor:
    """Two-stage bootstrap means of a ``(S, N)`` table of model seeds × subjects: each resample
    draws ``N`` subjects with replacement, then ``S`` seeds with replacement, and averages the drawn
    cells (the cluster bootstrap of Davison & Hinkley 1997, §3.8, resampling both the models and
    the subjects, so the interval holds the variation between training runs as well as between
    subjects). Returns ``(n_boot,)`` float64. The subjects are drawn first, from the same generator
    state as :func:`bootstrap_ci`'s, so with one seed (``S = 1``) the means equal its resamples.
    Computed in blocks of at most ``block`` resamples, so memory stays ``O(block · S · N)``; the
    subject draws are made twice (to reach the seeds' draws after them) rather than held."""
    v = torch.as_tensor(values, dtype=_F64)
    if v.ndim != 2 or v.numel() == 0:
        raise ScoringError("seed × subject values must be a non-empty 2-D table", expected="(S, N)",
                           found=tuple(v.shape), fix="pass one row per model seed, one column per subject")
    s, n = v.shape
    gen = torch.Generator(device=v.device).manual_seed(int(seed))
    seeds = torch.zeros(n_boot, 1, dtype=torch.long, device=v.device)
    if s > 1:
        start = gen.get_state()
        for _ in draws(n_boot, n, gen):  # the seeds are drawn after all subjects: step past them
            pass
        seeds = torch.randint(0, s, (n_boot, s), generator=gen, device=v.device)
        gen.set_state(start)
    out = torch.empty(n_boot, dtype=_F64, device=v.device)
    for sl, subj in draws(n_boot, n, gen, block_elements=min(BLOCK_ELEMENTS // s, block * n)):
        row_means = v[:, subj].mean(2)  # (S, b): each seed's mean over the drawn subjects
        out[sl] = row_means.T.gather(1, seeds[sl]).mean(1)
    return out


def bootstrap_ci_seeds(values: torch.Tensor, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float]:
    """Percentile bootstrap CI of the mean of a ``(S, N)`` seeds × subjects table (one row per
    trained model): ``(mean, low, high)`` over :func:`seed_subject_means`' resamples. BCa's
    jackknife acceleration has no standard two-level form, so the interval is percentile (Efron &
    Tibshirani 1993, ch. 13). Non-finite values give ``(nan, nan, nan)``; one subject gives
    ``(mean, nan, nan)``, as :func:`bootstrap_ci`."""
    _check_bootstrap(level, n_boot)
    v = torch.as_tensor(values, dtype=_F64)
    if v.ndim != 2 or v.numel() == 0 or not bool(torch.isfinite(v).all()):
        return float("nan"), float("nan"), float("nan")
    est = float(v.mean())
    if v.shape[1] < 2:
        return est, float("nan"), float("nan")
    boots = seed_subject_means(v, n_boot, seed)
    alpha = (1 - level) / 2
    lo, hi = torch.quantile(boots, torch.tensor([alpha, 1 - alpha], dtype=_F64, device=v.device)).tolist()
    return est, lo, hi


def paired_test(x: torch.Tensor, y: torch.Tensor, method: str = "wilcoxon", alternative: str = "greater",
                n_perm: int = 10000, seed: int = 0) -> float:
    """p-value for the paired difference ``x − y`` on the same subjects (``x, y: (N,)``).

    ``alternative``: ``greater`` (x better), ``less`` or ``two-sided``.
    ``wilcoxon``: Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, zero differences dropped;
    all-zero differences give p = 1). ``permutation``: sign-flip test of the mean difference
    (Fisher 1935; under H0 each difference is symmetric about 0): ``n_perm`` random sign vectors
    drawn in blocks from a seeded generator (:func:`draws`), ``p = (1 + #{null ≥ observed}) / (n_perm + 1)``
    (Phipson & Smyth 2010), with a 1e-12 tolerance so floating-point ties count as ties.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ConfigError("unknown alternative", expected=["greater", "less", "two-sided"], found=repr(alternative))
    (x, okx), (y, oky) = _as_1d(x, "paired test x"), _as_1d(y, "paired test y")
    if x.shape != y.shape:
        raise ScoringError("paired test needs one score per subject in both arms", expected=tuple(x.shape),
                           found=tuple(y.shape), fix="score both methods on the same subjects")
    if method not in ("wilcoxon", "permutation"):
        raise ConfigError("unknown paired test", expected=["wilcoxon", "permutation"], found=repr(method))
    if not (okx and oky):
        return float("nan")
    d = x - y
    if method == "wilcoxon":
        dn = d.cpu().numpy()
        if np.all(dn == 0):
            return 1.0
        return float(sst.wilcoxon(dn, alternative=alternative, zero_method="wilcox").pvalue)
    if method == "permutation":
        gen = torch.Generator(device=d.device).manual_seed(int(seed))
        obs, k = d.mean(), 0
        for _, bits in draws(n_perm, d.numel(), gen, high=2):  # sign vectors, in blocks
            null = ((bits.to(_F64) * 2 - 1) * d).mean(1)
            if alternative == "greater":
                k += int((null >= obs - 1e-12).sum())
            elif alternative == "less":
                k += int((null <= obs + 1e-12).sum())
            else:
                k += int((null.abs() >= obs.abs() - 1e-12).sum())
        return float((k + 1) / (n_perm + 1))
    raise ConfigError("unknown paired test", expected=["wilcoxon", "permutation"], found=repr(method))


def holm(p: torch.Tensor) -> torch.Tensor:
    """Holm–Bonferroni step-down adjusted p-values (Holm 1979, Scand. J. Stat. 6:65):
    for the sorted p₍₁₎ ≤ … ≤ p₍ₘ₎, ``p̃₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1) p₍ⱼ₎)``, returned in the
    input order. ``p: (m,)`` → float64 ``(m,)``."""
    p = torch.as_tensor(p, dtype=_F64).flatten()
    m = p.numel()
    if m == 0:
        return p
    order = torch.argsort(p, stable=True)
    adj_sorted = (p[order] * (m - torch.arange(m, dtype=_F64, device=p.device))).clamp(max=1.0)
    adj_sorted = torch.cummax(adj_sorted, 0).values
    out = torch.empty_like(p)
    out[order] = adj_sorted
    return out
