"""Ground-truth validity: does the model use the ground truth? Judged before any method is.

A localization score is only a verdict on a *method* if the model's evidence lies inside the
ground truth. This stage asks the model directly, with no attribution involved, by counterfactual
replacement (region perturbation / deletion: Samek et al. 2017; Petsiuk et al. 2018, RISE):

* **removed**: each test image with its ground-truth voxels replaced by a neutral fill;
* **elsewhere**: the same for ``n_placements`` equal-size regions elsewhere in the brain (the
  subject's own mask shifted to random places inside the brain that do not touch it);
* **kept**: only the ground truth kept, everything else replaced by the fill.

The fill is the **training-split mean image** on the model grid (what the model saw, averaged
over subjects it was trained on): it is in-distribution for intensity and anatomy, carries no
subject-specific signal and, being fixed, cannot leak a test subject's label. (A matched donor
would add between-donor noise; the mean is the deterministic choice.)

For each condition the stage reports the model's test performance (AUROC for classification,
Pearson r for regression) and the mean absolute change of the model's score (the class-1 minus
class-0 logit, or the regression output). Three criteria, thresholds from the protocol's
``validity`` section, decide whether localization can be judged on this task:

* ``drop_share = (P − P_removed) / (P − chance) ≥ min_drop_share``: removing the ground truth
  takes away most of the model's above-chance performance;
* ``kept_share = (P_kept − chance) / (P − chance) ≥ min_kept_share``: the ground truth alone
  carries most of it;
* ``effect_ratio = mean|Δ score| removed / mean|Δ score| elsewhere ≥ min_effect_ratio``: the
  ground truth matters more to the model than an equal amount of brain elsewhere.

If any fails, every method on the task is INCONCLUSIVE: a method must never FAIL for the model's
fault. Memory is bounded by one batch: subjects stream through, only per-subject scalars are kept.
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np
import torch

from ..errors import ConfigError


def model_score(model: torch.nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The scalar per subject that the task's performance is measured on, ``(B,)`` float64:
    class-1 minus class-0 logit (binary classification) or the output (regression)."""
    with torch.no_grad():
        out = model(x).float()
    out = out.reshape(out.shape[0], -1)
    if kind == "classification":
        if out.shape[1] != 2:
            raise ConfigError("the validity stage supports binary classification or regression",
                              expected="a model with 2 class outputs", found=f"{out.shape[1]} outputs",
                              fix="disable validity for this task")
        return (out[:, 1] - out[:, 0]).double()
    return out[:, 0].double()


def performance(s: np.ndarray, labels: np.ndarray, kind: str) -> float:
    """AUROC of ``s`` for binary labels, Pearson r for regression; NaN when undefined."""
    s, labels = np.asarray(s, float), np.asarray(labels)
    if kind == "classification":
        if len(np.unique(labels)) < 2:
            return float("nan")
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(labels, s))
    if len(s) < 3 or np.std(s) == 0 or np.std(labels) == 0:
        return float("nan")
    return float(np.corrcoef(s, labels.astype(float))[0, 1])


def random_placements(gt: torch.Tensor, brain: torch.Tensor, n: int, gen: torch.Generator,
                      *, min_in_brain: float = 0.9, tries: int = 200) -> list[torch.Tensor]:
    """``n`` shifted copies of each subject's mask: same shape and size, moved by a random whole-voxel
    translation to a place where ≥ ``min_in_brain`` of it lies in the brain and none of it touches
    the original. ``gt, brain: (B,1,D,H,W)`` bool → list of ``n`` such tensors (empty masks stay
    empty; when no place qualifies in ``tries`` draws, the best non-touching one is used)."""
    B = gt.shape[0]
    shape = torch.tensor(gt.shape[2:])
    outs = [torch.zeros_like(gt) for _ in range(n)]
    for b in range(B):
        nz = torch.nonzero(gt[b, 0]).cpu()
        if len(nz) == 0:
            continue
        lo, hi = nz.min(0).values, nz.max(0).values
        size = hi - lo + 1
        src = gt[b, 0, lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
        n_vox = int(src.sum())
        brain_b = brain[b if brain.shape[0] > 1 else 0, 0]
        for k in range(n):
            best, best_frac = None, -1.0
            for _ in range(tries):
                start = [int(torch.randint(0, max(1, int(shape[a] - size[a] + 1)), (1,), generator=gen))
                         for a in range(3)]
                sl = tuple(slice(start[a], start[a] + int(size[a])) for a in range(3))
                if bool((gt[b, 0][sl] & src).any()):
                    continue
                frac = float((brain_b[sl] & src).sum()) / n_vox
                if frac > best_frac:
                    best, best_frac = sl, frac
                if frac >= min_in_brain:
                    break
            if best is not None:
                outs[k][b, 0][best] = src
    return outs


def validity_check(model: torch.nn.Module, batches: Iterable[dict], fill: torch.Tensor, kind: str, *,
                   n_placements: int = 5, seed: int = 0, min_drop_share: float = 0.5,
                   min_kept_share: float = 0.5, min_effect_ratio: float = 2.0) -> dict:
    """Run the counterfactuals (see module doc) over ``batches`` of test subjects.

    Args:
        batches: dicts with ``image: (B,1,D,H,W)`` (what the model sees), ``gt`` bool (B,1,D,H,W),
            ``brain`` bool (B or 1,1,D,H,W) and ``label`` (B,) numpy.
        fill: ``(1,1,D,H,W)`` neutral image (the training-split mean), on the images' device.
        kind: ``classification`` (binary) or ``regression``.

    Returns a JSON-serializable dict: performances, mean |Δ score| per condition, the three
    shares/ratio, each criterion with observed/threshold/passed, ``passed`` and ``reason``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    s0, s_rm, s_keep, labels, n_gt = [], [], [], [], []
    s_else: list[list[np.ndarray]] = [[] for _ in range(n_placements)]
    for b in batches:
        x, gt = b["image"], b["gt"].bool()
        brain = b["brain"].bool() if b.get("brain") is not None else torch.ones_like(gt[:1])
        f = fill.expand_as(x)
        s0.append(model_score(model, x, kind).cpu().numpy())
        s_rm.append(model_score(model, torch.where(gt, f, x), kind).cpu().numpy())
        s_keep.append(model_score(model, torch.where(gt, x, f), kind).cpu().numpy())
        for k, m in enumerate(random_placements(gt, brain, n_placements, gen)):
            s_else[k].append(model_score(model, torch.where(m, f, x), kind).cpu().numpy())
        labels.append(np.asarray(b["label"]))
        n_gt.append(gt.flatten(1).sum(1).cpu().numpy())
    if not s0:
        return {"fill": "train_mean", "metric": "auroc" if kind == "classification" else "pearson_r",
                "chance": 0.5 if kind == "classification" else 0.0, "n_subjects": 0,
                "n_placements": int(n_placements), "performance": {}, "mean_abs_delta": {},
                "criteria": [], "passed": None, "reason": "no test subjects"}
    s0, s_rm, s_keep, y = (np.concatenate(v) for v in (s0, s_rm, s_keep, labels))
    els = [np.concatenate(v) for v in s_else]
    chance = 0.5 if kind == "classification" else 0.0
    P, P_rm, P_keep = (performance(v, y, kind) for v in (s0, s_rm, s_keep))
    P_else = [performance(v, y, kind) for v in els]
    d_rm = float(np.abs(s_rm - s0).mean())
    d_keep = float(np.abs(s_keep - s0).mean())
    d_else = float(np.mean([np.abs(v - s0).mean() for v in els])) if els else float("nan")
    above = P - chance
    ok = math.isfinite(above) and above > 0
    drop = (P - P_rm) / above if ok else float("nan")
    kept = (P_keep - chance) / above if ok else float("nan")
    ratio = d_rm / d_else if d_else > 0 else (float("inf") if d_rm > 0 else float("nan"))
    metric = "auroc" if kind == "classification" else "pearson_r"
    crit = [
        {"name": "drop_share", "observed": drop, "threshold": min_drop_share,
         "text": f"removing the ground truth takes away ≥ {min_drop_share:g} of the model's "
                 f"above-chance {metric}"},
        {"name": "kept_share", "observed": kept, "threshold": min_kept_share,
         "text": f"the ground truth alone keeps ≥ {min_kept_share:g} of the model's above-chance {metric}"},
        {"name": "effect_ratio", "observed": ratio, "threshold": min_effect_ratio,
         "text": f"removing the ground truth changes the model's score ≥ {min_effect_ratio:g}× more "
                 f"than removing an equal-size region elsewhere"},
    ]
    for c in crit:
        c["passed"] = None if not _finite(c["observed"]) and c["observed"] != float("inf") \
            else bool(c["observed"] >= c["threshold"])
    if not ok:
        passed, reason = None, f"the model is not above chance on the test split ({metric} {P:.3f})"
    else:
        failed = [c for c in crit if c["passed"] is not True]
        passed = not failed
        reason = ("the model relies on the ground truth: localization can be judged" if passed else
                  "the model does not rely on the ground-truth region, so localization cannot be "
                  "judged (" + "; ".join(f"{c['name']} {_fmt(c['observed'])} < {c['threshold']:g}"
                                         for c in failed) + ")")
    return {"fill": "train_mean", "metric": metric, "chance": chance, "n_subjects": int(len(y)),
            "n_placements": int(n_placements), "gt_voxels_mean": float(np.concatenate(n_gt).mean()),
            "performance": {"original": _j(P), "removed": _j(P_rm), "kept": _j(P_keep),
                            "elsewhere": _j(float(np.nanmean(P_else)) if P_else else float("nan")),
                            "elsewhere_each": [_j(p) for p in P_else]},
            "mean_abs_delta": {"removed": d_rm, "kept": d_keep, "elsewhere": _j(d_else)},
            "drop_share": _j(drop), "kept_share": _j(kept), "effect_ratio": _j(ratio),
            "criteria": [{**c, "observed": _j(c["observed"])} for c in crit],
            "passed": passed, "reason": reason}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _j(v):
    """JSON-safe float: NaN → None, ∞ → a large sentinel is not honest, so ∞ → None as well."""
    return float(v) if _finite(v) else None


def _fmt(v) -> str:
    return f"{v:.2f}" if _finite(v) else str(v)


def mean_image(batches: Iterator[torch.Tensor]) -> torch.Tensor:
    """Streaming mean ``(1,1,D,H,W)`` float32 of image batches ``(B,1,D,H,W)`` (float64 sum)."""
    total, n = None, 0
    for x in batches:
        s = x.double().sum(0, keepdim=True)
        total = s if total is None else total + s
        n += x.shape[0]
    if total is None:
        raise ConfigError("no training subjects to build the validity fill from",
                          expected="≥ 1 subject in the train split", found=0)
    return (total / n).float()
