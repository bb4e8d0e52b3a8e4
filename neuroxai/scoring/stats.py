"""Statistics over subjects: bootstrap CIs (percentile, BCa), paired tests, Holm correction."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats as sst

from ..errors import ConfigError


def bootstrap_ci(values: torch.Tensor, n_boot: int = 2000, level: float = 0.95, method: str = "percentile",
                 seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: bootstrap CI of the mean over subjects, all resamples drawn at once
    (one ``(n_boot, N)`` index tensor from a seeded generator, on the values' device).

    ``method="bca"``: bias-corrected and accelerated (Efron 1987), acceleration from the jackknife.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = v.numel()
    est = float(v.mean())
    if n < 2:
        return est, float("nan"), float("nan")
    gen = torch.Generator(device=v.device).manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=gen, device=v.device)
    boots = v[idx].mean(1)
    alpha = (1 - level) / 2
    if method == "percentile":
        q = torch.tensor([alpha, 1 - alpha], dtype=torch.float64, device=v.device)
    elif method == "bca":
        prop = float((boots < est).double().mean())
        if prop <= 0 or prop >= 1 or float(v.std()) == 0:
            return est, float(boots.min()), float(boots.max())
        z0 = sst.norm.ppf(prop)
        jack = (v.sum() - v) / (n - 1)
        d = jack.mean() - jack
        den = 6.0 * float((d ** 2).sum()) ** 1.5
        acc = float((d ** 3).sum()) / den if den > 0 else 0.0
        zs = sst.norm.ppf([alpha, 1 - alpha])
        adj = sst.norm.cdf(z0 + (z0 + zs) / (1 - acc * (z0 + zs)))
        q = torch.tensor(adj, dtype=torch.float64, device=v.device)
    else:
        raise ConfigError("unknown CI method", expected=["percentile", "bca"], found=method)
    lo, hi = torch.quantile(boots, q).tolist()
    return est, lo, hi


def paired_test(x: torch.Tensor, y: torch.Tensor, method: str = "wilcoxon", alternative: str = "greater",
                n_perm: int = 10000, seed: int = 0) -> float:
    """p-value that ``x`` exceeds ``y`` on the same subjects.

    ``wilcoxon``: signed-rank test (scipy); ``permutation``: sign-flip test of the mean paired
    difference, ``n_perm`` flips drawn at once from a seeded generator (p includes the observed).
    """
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    y = torch.as_tensor(y, dtype=torch.float64).flatten()
    d = (x - y)
    if method == "wilcoxon":
        dn = d.cpu().numpy()
        if np.all(dn == 0):
            return 1.0
        return float(sst.wilcoxon(dn, alternative=alternative, zero_method="wilcox").pvalue)
    if method == "permutation":
        gen = torch.Generator(device=d.device).manual_seed(seed)
        signs = torch.randint(0, 2, (n_perm, d.numel()), generator=gen, device=d.device).double() * 2 - 1
        null = (signs * d).mean(1)
        obs = d.mean()
        if alternative == "greater":
            k = (null >= obs - 1e-12).sum()
        elif alternative == "less":
            k = (null <= obs + 1e-12).sum()
        else:
            k = (null.abs() >= obs.abs() - 1e-12).sum()
        return float((k + 1) / (n_perm + 1))
    raise ConfigError("unknown paired test", expected=["wilcoxon", "permutation"], found=method)


def holm(p: torch.Tensor) -> torch.Tensor:
    """Holm–Bonferroni adjusted p-values (Holm 1979), monotone, capped at 1."""
    p = torch.as_tensor(p, dtype=torch.float64).flatten()
    m = p.numel()
    order = torch.argsort(p, stable=True)
    adj_sorted = (p[order] * (m - torch.arange(m, dtype=torch.float64, device=p.device))).clamp(max=1.0)
    adj_sorted = torch.cummax(adj_sorted, 0).values
    out = torch.empty_like(p)
    out[order] = adj_sorted
    return out
