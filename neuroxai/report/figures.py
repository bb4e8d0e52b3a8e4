"""Report figures as PNG bytes (matplotlib, Agg backend, deterministic output)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_META = {"Software": None}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata=_META)
    plt.close(fig)
    return buf.getvalue()


def _centre(mask: np.ndarray) -> tuple[int, int, int]:
    if mask is None or not np.any(mask > 0):
        return tuple(s // 2 for s in mask.shape)
    w = np.argwhere(mask > 0.5 * mask.max())
    return tuple(int(round(c)) for c in w.mean(0))


def _slices(vol: np.ndarray, c):
    # RAS voxel order: axis 0 x (L→R), 1 y (P→A), 2 z (I→S); show radiological-free, superior up.
    return [vol[:, :, c[2]].T, vol[:, c[1], :].T, vol[c[0], :, :].T]


def overlays(image: np.ndarray, mask: np.ndarray, maps: dict[str, np.ndarray], title: str) -> bytes:
    """Axial/coronal/sagittal slices through the mask's centre: image in gray, ground truth as a
    contour, each method's map (positive part, scaled to its own maximum) as a heat overlay."""
    c = _centre(mask)
    names = list(maps)
    fig, axes = plt.subplots(3, len(names) + 1, figsize=(2.3 * (len(names) + 1), 6.4), squeeze=False)
    views = ("axial", "coronal", "sagittal")
    for r, (img_s, m_s) in enumerate(zip(_slices(image, c), _slices(mask, c))):
        ax = axes[r, 0]
        ax.imshow(img_s, cmap="gray", origin="lower")
        ax.contour(m_s, levels=[0.5 * max(float(m_s.max()), 1e-6)], colors="cyan", linewidths=0.8)
        ax.set_ylabel(views[r], fontsize=8)
        if r == 0:
            ax.set_title("ground truth", fontsize=8)
        for j, name in enumerate(names):
            a = np.clip(maps[name], 0, None)
            vmax = float(a.max()) or 1.0
            s = _slices(a, c)[r]
            ax = axes[r, j + 1]
            ax.imshow(img_s, cmap="gray", origin="lower")
            ax.imshow(np.ma.masked_less_equal(s, 0.05 * vmax), cmap="hot", origin="lower", vmin=0, vmax=vmax, alpha=0.75)
            ax.contour(m_s, levels=[0.5 * max(float(m_s.max()), 1e-6)], colors="cyan", linewidths=0.6)
            if r == 0:
                ax.set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def distributions(values: dict[str, np.ndarray], chance: float | None, metric: str) -> bytes:
    """Per-method box + strip plot of per-subject scores, with the chance level as a line."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 3.0))
    ax.boxplot([values[n] for n in names], showfliers=False)
    rng = np.random.default_rng(0)
    for i, n in enumerate(names):
        v = values[n]
        ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(v)), v, s=6, alpha=0.5, color="k")
    if chance is not None:
        ax.axhline(chance, color="tab:red", ls="--", lw=1, label=f"chance {chance:.3f}")
        ax.legend(fontsize=7, loc="best")
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    return _png(fig)


def randomization(curves: dict[str, dict]) -> bytes:
    """Similarity to the original map as layers are randomized from the top (Adebayo et al. 2018)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    thr = None
    for name, c in curves.items():
        ax.plot(range(1, len(c["similarity"]) + 1), c["similarity"], marker="o", ms=3, label=name)
        thr = c.get("threshold", thr)
        layers = c["layers"]
    if thr is not None:
        ax.axhline(thr, color="tab:red", ls="--", lw=1, label=f"pass below {thr}")
    ax.set_xticks(range(1, len(layers) + 1))
    ax.set_xticklabels(layers, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("similarity to original map", fontsize=8)
    ax.set_xlabel("randomized down to layer (cascading)", fontsize=8)
    ax.legend(fontsize=7)
    return _png(fig)
