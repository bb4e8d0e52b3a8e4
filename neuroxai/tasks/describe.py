"""How each task's ground truth is described in a report: the ``ground_truth`` fact of its
registration (``@TASKS.register(name, ground_truth=...)``), a function of the task's ``info``."""
from __future__ import annotations


def region_truth(info: dict) -> str:
    """``region_volume`` and its null control: the signal support or the segmented region."""
    if not info.get("ground_truth"):
        return ""
    regions = ", ".join(info.get("regions", []))
    m = info.get("margin_mm", 0) or 0
    if info["ground_truth"] == "signal_support":
        base = (f"signal support of {regions}: the voxels where a 1-SD change of the latent that "
                f"drives the volume moves tissue by > 0.5 mm (the region's boundary zone, both sides)")
    else:
        base = f"the segmented region ({regions})"
    return base + (f", dilated by {m:g} mm" if m else "")


def inserted_truth(info: dict) -> str:
    """``positive_control``: where the signal was put."""
    return f"the region where the signal was inserted ({', '.join(info.get('regions', []))})"


def lesion_truth(info: dict) -> str:
    return "each subject's lesion mask"


def two_measure_truth(info: dict) -> str:
    """``artificial_disease``: both measures' regions with their other hemispheres."""
    if info.get("ground_truth") == "signal_support":
        return "the signal support of both measures' regions and their other hemispheres"
    regions = ", ".join([*info.get("high_regions", []), *info.get("low_regions", [])])
    m = info.get("margin_mm", 0) or 0
    return (f"both measures' regions ({regions}) and their other hemispheres"
            + (f", dilated by {m:g} mm" if m else ""))


def aging_truth(info: dict) -> str:
    """``brain_age``: the regions given an aging effect, ranked by its size."""
    m = info.get("margin_mm", 0) or 0
    order = info.get("true_ordering", [])
    return (f"the regions with an aging effect ({', '.join(order)}, largest effect first)"
            + (f", dilated by {m:g} mm" if m else ""))
