"""Corrected regional measures (cIDPs) of Siegel et al. 2025 (arXiv 2508.02560; code:
brain-tools/brain-xai-benchmark, ``1-idp_correction/mass_correct.py`` and ``cidp_methods.py``).

A regional measure (for example the left hippocampal volume), standardised, minus its linear
regression on the first ``k`` principal components of *all other* regional measures of the
cohort. Fields of the same structure (its other hemisphere) are left out of the PCA, so the
correction removes what the region shares with the rest of the brain (head size, global
atrophy) and keeps what is its own: the signal then sits in the region itself. The study used
``k = 100`` for subcortical and ``k = 440`` for cortical measures.

Two deliberate differences, both keeping the test split's labels free of test information:
the standardisation, the PCA and the regression are fitted on the training split only (the study
fits them on all subjects), and the covariates a task adjusts for (TIV, age, sex) enter the same
regression, so ``k = 0`` is the uncorrected task exactly. Scaling the target first (the study's
``StandardScaler``) only rescales the residual, so it is left out: the class thresholds and the
z-scored regression label do not change.

The regional measures here are the volumes of every label of each subject's own label map
(:func:`label_volumes`); on the embedded cohort, the AAL3 regions.
"""
from __future__ import annotations

from typing import Sequence

import nibabel as nib
import numpy as np

from ..errors import ConfigError, TaskError
from .regions import check_integer_labels


def label_volumes(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Volume in ml of every label > 0 of each label map: ``(labels (L,), volumes (N, L))``, the
    labels sorted, a label absent from a subject 0 ml there."""
    counts, vox = [], []
    for p in paths:
        img = nib.load(p)
        data = np.asarray(img.dataobj)
        check_integer_labels(data, p)
        lab = np.round(data).astype(np.int64).ravel()
        if lab.min() < 0:
            raise TaskError("a label map holds negative labels", path=p, expected="labels ≥ 0",
                            found=int(lab.min()), fix="give a segmentation with non-negative labels")
        counts.append(np.bincount(lab))
        vox.append(abs(np.linalg.det(img.affine[:3, :3])) / 1000.0)
    n_lab = max(len(c) for c in counts)
    vols = np.zeros((len(paths), n_lab))
    for i, (c, v) in enumerate(zip(counts, vox)):
        vols[i, :len(c)] = c * v
    present = np.flatnonzero(vols.any(0))
    present = present[present > 0]
    return present, vols[:, present]


def same_structure(ids: Sequence[int], pairs: dict[int, int]) -> set[int]:
    """The target labels and their other-hemisphere counterparts: the fields the study leaves out
    of the PCA (``remove_unwanted_fields``: every field whose name holds the structure's name)."""
    out = {int(i) for i in ids}
    return out | {pairs[i] for i in list(out) if i in pairs}


def principal_scores(others: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Scores of every subject on the principal components of ``others: (N, M)``, standardised
    and decomposed on the ``train`` rows (columns constant on train are dropped): ``(N, r)``, the
    components in order of explained variance, ``r`` = the rank of the training matrix."""
    tr = others[train]
    mu, sd = tr.mean(0), tr.std(0)
    keep = sd > 1e-12
    z = (others[:, keep] - mu[keep]) / sd[keep]
    if not keep.any():
        return np.zeros((len(others), 0))
    _, s, vt = np.linalg.svd(z[train], full_matrices=False)
    r = int((s > s[0] * 1e-10).sum()) if len(s) else 0
    return z @ vt[:r].T


def pca_correct(y: np.ndarray, others: np.ndarray, train: np.ndarray, k: int,
                covs: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """The corrected measure: OLS residuals of ``y: (N,)`` on ``[1, covs, PC_1 … PC_k]`` of
    ``others: (N, M)`` (:func:`principal_scores`), everything fitted on the ``train`` rows.

    Returns ``(residuals for all rows, info)``; ``k = 0`` is the residual on ``[1, covs]`` alone.
    Raises :class:`ConfigError` when ``k`` exceeds the components the training split has, and
    :class:`TaskError` when the regression has too few training subjects for its terms.
    """
    from .base import residualize

    k = int(k)
    covs = np.zeros((len(y), 0)) if covs is None else np.asarray(covs, float).reshape(len(y), -1)
    pcs = principal_scores(others, train) if k else np.zeros((len(y), 0))
    if k > pcs.shape[1]:
        raise ConfigError("correction.pca_components exceeds the principal components available",
                          expected=f"0 ≤ k ≤ {pcs.shape[1]} (the rank of the other regions' measures on the "
                                   f"training split: {int(train.sum())} subjects, {others.shape[1]} regions)",
                          found=k, fix="use fewer components or more subjects")
    X = np.column_stack([covs, pcs[:, :k]])
    res, beta = residualize(y, X, train)
    sd = float(np.std(y[train]))
    return res, {"pca_components": k, "n_other_regions": int(others.shape[1]),
                 "components_available": int(pcs.shape[1]),
                 "r2_removed_train": float(1 - np.var(res[train]) / np.var(y[train])) if sd > 0 else 0.0}


def parse_correction(correction) -> int:
    """``correction: {pca_components: k}`` → ``k`` (``None`` → 0)."""
    if correction is None:
        return 0
    if not isinstance(correction, dict) or set(correction) - {"pca_components"}:
        raise ConfigError("unknown correction", path="tasks[].params.correction",
                          expected="{pca_components: k} (k ≥ 0)", found=correction)
    k = correction.get("pca_components", 0)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ConfigError("correction.pca_components is a number of components",
                          path="tasks[].params.correction.pca_components", expected="an integer ≥ 0", found=k)
    return int(k)


def voxel_target_correlation(images: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson correlation across subjects between each voxel's intensity and ``target``:
    ``images: (N, V)``, ``target: (N,)`` → ``(V,)`` (0 where a voxel is constant). The
    correlation map Siegel et al. 2025 check after each correction step (there as permuted OLS
    t-scores; the sign and ranking of voxels are those of the correlation)."""
    x = images - images.mean(0)
    t = target - target.mean()
    num = t @ x
    den = np.sqrt((x ** 2).sum(0) * (t ** 2).sum())
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
