"""World spaces: affine transforms between two images' spaces, and whether two images overlap.

A transform here is a 4×4 world→world matrix in RAS millimetres mapping a point of one image's
world (the ground-truth masks') to another's (the saved maps'), as :func:`read_transform` reads it
from a text matrix or an ITK/ANTs affine. Resampling with it is
:func:`neuroxai.data.transforms.resample_to_grid` on ``transform @ affine``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ScoringError

#: ITK works in LPS (x and y negated against RAS); this matrix is its own inverse.
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ITK_LINEAR = r"(Affine|MatrixOffset|Euler3D|Rigid3D|Similarity3D)Transform"


def read_transform(path: str | Path) -> np.ndarray:
    """A 4×4 world→world matrix (RAS mm) mapping a point of the *mask's* space to the *map's* space.

    Accepted: a 4×4 text matrix (whitespace separated, RAS, the above direction), or an ITK/ANTs
    affine (``.mat`` written by antsRegistration, or an ITK ``.txt`` "Insight Transform File")
    — ITK transforms map points of the *fixed* image to the *moving* one in LPS, so the ANTs
    registration of a template (moving) to a subject (fixed) is the one to pass. Nonlinear warps
    are not supported: resample the maps with ``antsApplyTransforms`` first.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("transform file not found", path=p, expected="a .mat / ITK .txt / 4×4 text file",
                          found="no such file", fix="check the path")
    if p.suffix.lower() == ".mat":
        return _read_itk_mat(p)
    text = p.read_text(errors="replace")
    if text.lstrip().startswith("#Insight Transform File"):
        return _read_itk_text(text, p)
    try:
        a = np.array([[float(x) for x in line.split()] for line in text.splitlines() if line.strip()
                      and not line.lstrip().startswith("#")])
    except ValueError:
        a = np.zeros(0)
    if a.shape == (3, 4):
        a = np.vstack([a, [0, 0, 0, 1]])
    if a.shape != (4, 4) or not np.isfinite(a).all() or abs(np.linalg.det(a[:3, :3])) < 1e-9:
        raise ConfigError("not a 4×4 affine matrix", path=p, expected="4 rows of 4 numbers, invertible",
                          found=f"shape {a.shape}", fix="write the matrix as 4 lines of 4 numbers (RAS mm)")
    return a


def _read_itk_mat(p: Path) -> np.ndarray:
    """An antsRegistration ``.mat`` (MATLAB v4: ``AffineTransform_double_3_3`` and ``fixed``)."""
    try:
        from scipy.io import loadmat

        m = loadmat(str(p))
    except Exception as exc:  # noqa: BLE001 - any parse failure is one named error
        raise ConfigError("cannot read the ITK/ANTs .mat transform", path=p, found=f"{type(exc).__name__}: {exc}",
                          fix="write it with antsRegistration, or give a 4×4 text matrix") from exc
    key = next((k for k in m if k.startswith("AffineTransform") or k.startswith("MatrixOffsetTransform")), None)
    if key is None or "fixed" not in m:
        raise ConfigError("the .mat file holds no 3-D affine transform", path=p,
                          expected="AffineTransform_double_3_3 and fixed",
                          found=sorted(k for k in m if not k.startswith("__")),
                          fix="nonlinear warps are not supported: resample the maps with antsApplyTransforms first")
    params, center = np.asarray(m[key], float).ravel(), np.asarray(m["fixed"], float).ravel()
    return _itk_to_ras(params, center, p)


def _read_itk_text(text: str, p: Path) -> np.ndarray:
    """An ITK "Insight Transform File" holding one linear transform."""
    kinds = re.findall(r"^Transform:\s*(\S+)", text, re.M)
    if len(kinds) != 1 or not re.match(_ITK_LINEAR, kinds[0]):
        raise ConfigError("only one linear ITK transform is supported", path=p, expected="AffineTransform_double_3_3",
                          found=kinds, fix="resample the maps with antsApplyTransforms first")
    params = _itk_numbers(text, "Parameters", p)
    center = _itk_numbers(text, "FixedParameters", p, default=np.zeros(3))
    if len(params) != 12:
        raise ConfigError("unsupported ITK transform parameters", path=p, expected="12 (3×3 matrix + translation)",
                          found=len(params), fix="convert it to an AffineTransform_double_3_3")
    return _itk_to_ras(params, center, p)


def _itk_numbers(text: str, key: str, path: Path, default=None) -> np.ndarray:
    """The numbers of an ITK transform file's ``key:`` line; a missing line (unless ``default``) or
    a word that is not a number is a :class:`ConfigError` naming it."""
    m = re.search(rf"^{key}:(.*)$", text, re.M)
    if m is None:
        if default is not None:
            return default
        raise ConfigError(f"the ITK transform has no '{key}:' line", path=path, expected=f"a line '{key}: n1 n2 ...'",
                          found="none", fix="write it with antsRegistration / ITK, or give a 4×4 text matrix")
    try:
        return np.array(m.group(1).split(), float)
    except ValueError:
        bad = next(w for w in m.group(1).split() if not _is_float(w))
        raise ConfigError(f"the ITK transform's '{key}:' line holds a word that is not a number", path=path,
                          expected="numbers (e.g. 1 0 0 0 1 0 0 0 1 0 0 0)", found=repr(bad[:80]),
                          fix="rewrite the transform with antsRegistration / ITK") from None


def _is_float(w: str) -> bool:
    try:
        float(w)
        return True
    except ValueError:
        return False


def _itk_to_ras(params: np.ndarray, center: np.ndarray, path: Path) -> np.ndarray:
    """ITK's matrix, translation and centre of rotation (LPS) as one RAS world→world matrix."""
    if len(params) != 12 or len(center) != 3:
        raise ConfigError("unsupported ITK transform", path=path, expected="3×3 matrix + translation + center",
                          found=f"{len(params)} parameters, {len(center)} fixed", fix="use a 3-D affine transform")
    mat, trans = params[:9].reshape(3, 3), params[9:]
    lps = np.eye(4)
    lps[:3, :3] = mat
    lps[:3, 3] = trans + center - mat @ center
    return _LPS @ lps @ _LPS


def world_bounds(shape, affine) -> tuple[np.ndarray, np.ndarray]:
    """The world extent (min and max corner, mm) of a grid of ``shape`` voxels, voxel edges included."""
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[2] - 0.5)])
    w = (affine @ corners.T).T[:, :3]
    return w.min(0), w.max(0)


def check_overlap(map_vol, mask_vol, to_mask_world: np.ndarray, *, map_path, mask_path) -> None:
    """Refuse maps and masks whose world extents do not overlap, saying how far apart they are."""
    lo1, hi1 = world_bounds(map_vol.shape, to_mask_world @ map_vol.affine)
    lo2, hi2 = world_bounds(mask_vol.shape, mask_vol.affine)
    gap = np.maximum(0.0, np.maximum(lo1 - hi2, lo2 - hi1))
    if (gap > 0).any():
        raise ScoringError("the map and the mask do not overlap in world space", path=map_path,
                           expected=f"extents that overlap the mask {mask_path}",
                           found=f"{np.linalg.norm(gap):.1f} mm apart (per axis {np.round(gap, 1).tolist()} mm; "
                                 f"map x,y,z [{np.round(lo1, 1).tolist()} … {np.round(hi1, 1).tolist()}] mm, "
                                 f"mask [{np.round(lo2, 1).tolist()} … {np.round(hi2, 1).tolist()}] mm)",
                           fix="are they in the same space? give --transform (mask space → map space), "
                               "or check the affines (`neuroxai info FILE`)")
