"""Statistics over subjects: bootstrap CIs (percentile, BCa), paired tests, Holm correction.

Resampling is vectorized on the values' device: one ``(n_boot, N)`` (or ``(n_perm, N)``) draw
from a seeded ``torch.Generator``, so the same seed gives the same interval.
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
    idx = torch.randint(0, n, (n_boot, n), generator=gen, device=v.device)
    boots = v[idx].mean(1)
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
    Computed in blocks of ``block`` resamples, so memory stays ``O(block · S · N)``."""
    v = torch.as_tensor(values, dtype=_F64)
    if v.ndim != 2 or v.numel() == 0:
        raise ScoringError("seed × subject values must be a non-empty 2-D table", expected="(S, N)",
                           found=tuple(v.shape), fix="pass one row per model seed, one column per subject")
    s, n = v.shape
    gen = torch.Generator(device=v.device).manual_seed(int(seed))
    subj = torch.randint(0, n, (n_boot, n), generator=gen, device=v.device)
    seeds = (torch.randint(0, s, (n_boot, s), generator=gen, device=v.device) if s > 1
             else torch.zeros(n_boot, 1, dtype=torch.long, device=v.device))
    out = torch.empty(n_boot, dtype=_F64, device=v.device)
    for b0 in range(0, n_boot, block):
        sl = slice(b0, b0 + block)
        row_means = v[:, subj[sl]].mean(2)  # (S, b): each seed's mean over the drawn subjects
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
    drawn at once from a seeded generator, ``p = (1 + #{null ≥ observed}) / (n_perm + 1)``
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
        signs = torch.randint(0, 2, (n_perm, d.numel()), generator=gen, device=d.device).to(_F64) * 2 - 1
        null = (signs * d).mean(1)
        obs = d.mean()
        if alternative == "greater":
            k = (null >= obs - 1e-12).sum()
        elif alternative == "less":
            k = (null <= obs + 1e-12).sum()
        else:
            k = (null.abs() >= obs.abs() - 1e-12).sum()
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
