"""Tie-aware ranking helpers shared by the metrics (one sort per volume)."""
from __future__ import annotations

import torch


def average_ranks(v: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties get their average rank (as scipy.stats.rankdata)."""
    vs, order = torch.sort(v, stable=True)
    _, inv, cnt = torch.unique_consecutive(vs, return_inverse=True, return_counts=True)
    cum = cnt.cumsum(0).to(torch.float64)
    avg = cum - (cnt.to(torch.float64) - 1) / 2
    ranks = torch.empty_like(avg[inv])
    ranks[order] = avg[inv]
    return ranks


def auroc_1d(score: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Exact, tie-aware AUROC (Mann–Whitney U / (n⁺ n⁻))."""
    r = average_ranks(score.to(torch.float64))
    npos = label.sum().to(torch.float64)
    nneg = label.numel() - npos
    if npos == 0 or nneg == 0:
        return torch.tensor(float("nan"), dtype=torch.float64, device=score.device)
    return (r[label].sum() - npos * (npos + 1) / 2) / (npos * nneg)


def average_precision_1d(score: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Average precision as scikit-learn: Σ over distinct thresholds (descending) of
    (recall increase) × precision; tied scores enter as one threshold."""
    vs, order = torch.sort(score.to(torch.float64), descending=True, stable=True)
    lab = label[order].to(torch.float64)
    _, inv, cnt = torch.unique_consecutive(vs, return_inverse=True, return_counts=True)
    tp_g = torch.zeros(len(cnt), dtype=torch.float64, device=score.device).index_add_(0, inv, lab)
    tp = tp_g.cumsum(0)
    n = cnt.cumsum(0).to(torch.float64)
    npos = lab.sum()
    if npos == 0:
        return torch.tensor(float("nan"), dtype=torch.float64, device=score.device)
    return (tp_g / npos * (tp / n)).sum()
