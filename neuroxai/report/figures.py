"""Report figures as PNG bytes (matplotlib, Agg backend, byte-deterministic output).

Volumes here are NumPy arrays ``(D, H, W)`` in RAS voxel order: axis 0 = x (left → right),
axis 1 = y (posterior → anterior), axis 2 = z (inferior → superior); ``spacing`` is in mm.
Slices are drawn in neurological convention (subject's left on the viewer's left), superior up.
"""
from __future__ import annotations

import functools
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .schema import Sanity, Validity  # noqa: E402

# No "Software" text chunk (it carries the matplotlib version) and no timestamps: the same
# inputs give the same PNG bytes, so a rebuilt report is byte-identical.
_META = {"Software": None}
_DPI = 80
VIEWS = ("axial", "coronal", "sagittal")
GT_COLOUR = "cyan"


def _plain_text(fn):
    """Labels are data (subject ids, method labels from a protocol): ``$x^$`` or ``\\frac`` in an
    id is drawn as typed, never parsed as math text (it used to crash the report after a whole
    run). Scoped to our figures: the caller's matplotlib settings are left alone."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context({"text.parse_math": False, "text.usetex": False}):
            return fn(*args, **kwargs)
    return wrapper


def png_bytes(fig) -> bytes:
    """Render ``fig`` to PNG bytes (fixed dpi, no metadata) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata=_META)
    plt.close(fig)
    return buf.getvalue()


def slice_centre(mask: np.ndarray | None, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Voxel index of the three planes: the mask's centre of mass (weighted by the mask value).

    A plane through the centre of mass can miss the mask entirely (e.g. the midline sagittal plane
    of a bilateral region); on such an axis the plane holding the most mask mass is used instead.
    Without a (non-empty) mask: the volume centre.
    """
    if mask is None or not np.any(mask > 0):
        return tuple(int(s // 2) for s in shape)
    m = np.clip(np.asarray(mask, np.float64), 0, None)
    total = m.sum()
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        profile = m.sum(axis=other)  # mask mass in each plane along this axis
        com = int(round(float((profile * np.arange(m.shape[ax])).sum() / total)))
        out.append(com if profile[com] > 0 else int(np.argmax(profile)))
    return tuple(out)


def _planes(vol: np.ndarray, c) -> list[np.ndarray]:
    # Transposed so that rows run along y (axial) or z (coronal, sagittal); origin="lower" puts
    # posterior / inferior at the bottom.
    return [vol[:, :, c[2]].T, vol[:, c[1], :].T, vol[c[0], :, :].T]


def _aspects(spacing) -> list[float]:
    sx, sy, sz = (float(s) for s in (spacing or (1.0, 1.0, 1.0)))
    return [sy / sx, sz / sx, sz / sy]


def _contour(ax, m_s: np.ndarray | None, aspect: float, lw: float) -> None:
    # Contour at half the peak: for a cohort-frequency mask that is "in ≥ half the subjects".
    if m_s is None or not np.any(m_s > 0):
        return
    ax.contour(m_s, levels=[0.5 * float(m_s.max())], colors=GT_COLOUR, linewidths=lw, origin="lower")
    ax.set_aspect(aspect)


@_plain_text
def overlays(image: np.ndarray, mask: np.ndarray | None, maps: dict[str, np.ndarray], title: str,
             spacing=(1.0, 1.0, 1.0)) -> bytes:
    """Tri-planar overlays through :func:`slice_centre` of ``mask``.

    Column 0: the image in gray with the ground-truth contour; then one column per method: its map's
    positive part (scaled to that map's own maximum, values under 5 % hidden) as a heat overlay on
    the image, with the same contour. ``image``, ``mask``, maps: ``(D, H, W)`` float.
    """
    image = np.asarray(image, np.float32)
    c = slice_centre(mask, image.shape)
    names = list(maps)
    ncol = len(names) + 1
    fig, axes = plt.subplots(3, ncol, figsize=(2.1 * ncol, 6.3), squeeze=False)
    img_p = _planes(image, c)
    m_p = _planes(np.asarray(mask, np.float32), c) if mask is not None else [None] * 3
    asp = _aspects(spacing)
    for r in range(3):
        ax = axes[r, 0]
        ax.imshow(img_p[r], cmap="gray", origin="lower", aspect=asp[r], interpolation="nearest")
        _contour(ax, m_p[r], asp[r], 0.9)
        ax.set_ylabel(f"{VIEWS[r]} ({'zyx'[r]} = {c[2 - r]})", fontsize=7)
        for j, name in enumerate(names):
            a = np.clip(np.nan_to_num(np.asarray(maps[name], np.float32)), 0, None)
            vmax = float(a.max()) or 1.0
            s = _planes(a, c)[r]
            ax = axes[r, j + 1]
            ax.imshow(img_p[r], cmap="gray", origin="lower", aspect=asp[r], interpolation="nearest")
            ax.imshow(np.ma.masked_less_equal(s, 0.05 * vmax), cmap="hot", origin="lower", vmin=0,
                      vmax=vmax, alpha=0.75, aspect=asp[r], interpolation="nearest")
            _contour(ax, m_p[r], asp[r], 0.6)
            if r == 0:
                ax.set_title(name, fontsize=8)
    axes[0, 0].set_title("image + ground truth", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r in (0, 1):  # x runs left → right on the axial and coronal planes
        axes[r, 0].text(0.02, 0.02, "L", color="w", fontsize=7, transform=axes[r, 0].transAxes)
        axes[r, 0].text(0.92, 0.02, "R", color="w", fontsize=7, transform=axes[r, 0].transAxes)
    fig.suptitle(title, fontsize=9)
    return png_bytes(fig)


@_plain_text
def distributions(values: dict[str, np.ndarray], chance: float | None, metric: str,
                  cis: dict[str, tuple] | None = None) -> bytes:
    """Per-method box + strip plot of per-subject scores, the mean with its CI as a diamond with
    error bars (``cis[name] = (mean, low, high)``), and the chance level as a dashed line."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(1.0 * len(names) + 2.2, 3.0))
    ax.boxplot([np.asarray(values[n], float) for n in names], showfliers=False, widths=0.5)
    rng = np.random.default_rng(0)  # fixed jitter: deterministic PNG bytes
    for i, n in enumerate(names):
        v = np.asarray(values[n], float)
        ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(v)), v, s=5, alpha=0.45, color="k", lw=0)
        ci = (cis or {}).get(n)
        if ci and all(x is not None and math.isfinite(x) for x in ci):
            mean, lo, hi = ci
            ax.errorbar(i + 1.3, mean, yerr=[[mean - lo], [hi - mean]], fmt="D", ms=4,
                        color="tab:blue", capsize=3, lw=1)
    if chance is not None and math.isfinite(chance):
        ax.axhline(chance, color="tab:red", ls="--", lw=1, label=f"chance {chance:.3f}")
    ax.plot([], [], "D", color="tab:blue", ms=4, label="mean [CI]")
    ax.legend(fontsize=7, loc="best")
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    return png_bytes(fig)


@_plain_text
def randomization(curves: dict[str, Sanity]) -> bytes:
    """Similarity of each method's map to its original as layers are randomized from the output
    down (cascading model randomization, Adebayo et al. 2018); the pass threshold dashed."""
    fig, ax = plt.subplots(figsize=(6, 3))
    thr, layers = None, []
    for name, c in curves.items():
        sim = [np.nan if s is None else s for s in c.similarity]
        ax.plot(range(1, len(sim) + 1), sim, marker="o", ms=3, label=name)
        thr = c.threshold
        if len(c.layers) > len(layers):
            layers = list(c.layers)
    if thr is not None:
        ax.axhline(thr, color="tab:red", ls="--", lw=1, label=f"pass below {thr:.3f}")
    ax.set_xticks(range(1, len(layers) + 1))
    ax.set_xticklabels([str(x) for x in layers], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("similarity to original map", fontsize=8)
    ax.set_xlabel("randomized down to layer (cascading, output first)", fontsize=8)
    ax.legend(fontsize=7)
    return png_bytes(fig)


@_plain_text
def distance_profiles(distances_mm, profiles: dict[str, np.ndarray], volume_share: np.ndarray,
                      title: str) -> bytes:
    """Relevance-by-distance curves (``scoring.profile.distance_profile``): per method the cohort-mean
    share of positive relevance within d mm of the ground truth, against d; the cohort-mean share of
    brain voxels within d (what a map that ignores the mask gets) as a dashed black chance line.

    ``distances_mm``: ``(K,)``; ``profiles[name]``: ``(K,)`` or per subject ``(B, K)`` (NaN rows,
    maps without positive relevance, are left out of the mean); ``volume_share``: ``(K,)`` or ``(B, K)``.
    """
    d = np.asarray(distances_mm, float)

    def _mean(v):
        v = np.asarray(v, float)
        if v.ndim == 1:
            return v
        keep = ~np.isnan(v).any(axis=1)
        return v[keep].mean(axis=0) if keep.any() else np.full(v.shape[1], np.nan)

    vol = _mean(volume_share)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    top = float(np.nanmax(vol)) if vol.size else 1.0
    for name, v in profiles.items():
        m = _mean(v)
        ax.plot(d, m, marker="o", ms=3, lw=1.2, label=name)
        with np.errstate(divide="ignore", invalid="ignore"):
            ax2.plot(d, m / vol, marker="o", ms=3, lw=1.2, label=name)
        if np.isfinite(m).any():
            top = max(top, float(np.nanmax(m)))
    ax.plot(d, vol, color="k", ls="--", lw=1, label="random map / chance")
    ax2.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_ylim(0, min(1.0, top * 1.1 + 0.02))
    ax2.set_ylim(bottom=0)
    for a in (ax, ax2):
        a.set_xlim(float(d.min()) if d.size else 0.0, float(d.max()) if d.size else 1.0)
        a.set_xlabel("distance from ground truth (mm)", fontsize=8)
        a.tick_params(labelsize=7)
        a.grid(alpha=0.3, lw=0.5)
    ax.set_ylabel("share of positive relevance within d", fontsize=8)
    ax2.set_ylabel("enrichment: relevance share / brain share", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    return png_bytes(fig)


@_plain_text
def validity_bars(v: Validity, title: str) -> bytes:
    """The ground-truth validity check as bars: the model's test performance on the original
    images, with the ground truth removed, with an equal-size region elsewhere removed (mean over
    placements), and with only the ground truth kept; a dashed line at chance."""
    perf = v.performance
    names = ["original", "removed", "elsewhere", "kept"]
    labels = ["original", "ground truth\nremoved", "equal region\nelsewhere removed", "only ground\ntruth kept"]
    vals = [np.nan if perf.get(k) is None else float(perf[k]) for k in names]
    fig, ax = plt.subplots(figsize=(5, 3.0))
    colors = ["#4c72b0", "#c44e52", "#8c8c8c", "#55a868"]
    ax.bar(range(4), np.nan_to_num(vals, nan=0.0), color=colors, width=0.6)
    for i, x in enumerate(vals):
        ax.text(i, (0 if np.isnan(x) else x) + 0.01, "—" if np.isnan(x) else f"{x:.2f}", ha="center",
                va="bottom", fontsize=7)
    ax.axhline(float(v.chance), color="k", ls="--", lw=1)
    ax.set_xticks(range(4))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylim(min(0.0, np.nanmin(vals) if not np.all(np.isnan(vals)) else 0.0), 1.05)
    ax.set_ylabel(f"test {v.metric}", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    return png_bytes(fig)
