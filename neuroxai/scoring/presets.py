"""Named scoring presets: a published study's scoring steps under one name.

``scoring: {preset: siegel2025}`` in a protocol and ``score(..., preset="siegel2025")`` take the
values below for every step the user does not set (each one can be overridden:
``{preset: siegel2025, gt_dilation: 0, contralateral: false}``).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError

#: Siegel et al. 2025 (arXiv 2508.02560; code: brain-tools/brain-xai-benchmark,
#: ``4-xai_validation/xai_validation_helper_methods.py: process_xpls_for_scoring`` and
#: ``cidp_based/compute_rma_scores.py``): |map|, masked to the brain, nilearn ``smooth_img`` with
#: ``fwhm=2`` on identity-affine images (2 voxels of the scoring grid; 4 mm on their 2 mm grid),
#: voxels below the 99th percentile of the whole volume set to 0, the target region plus its
#: contralateral counterpart dilated by 2 iterations of a 6-connected binary dilation.
SIEGEL2025: dict[str, Any] = {
    "sign": "abs",
    "mask_maps": True,
    "smooth_fwhm_vox": 2.0,
    "smooth_kernel": "nilearn",
    "percentile": 99.0,
    "percentile_over": "volume",
    "gt_dilation": 2,
    "contralateral": True,
}

PRESETS: dict[str, dict[str, Any]] = {"siegel2025": SIEGEL2025}


def resolve_preset(preset: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's steps overridden by the ``given`` ones (those the user set)."""
    if preset is None:
        return dict(given)
    if preset not in PRESETS:
        raise ConfigError("unknown scoring preset", path="scoring.preset", expected=sorted(PRESETS),
                          found=repr(preset))
    return {**PRESETS[preset], **given}
