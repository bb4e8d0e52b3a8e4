"""Volumes, manifests, transforms, datasets and the embedded demo cohort."""
from .transforms import (crop_or_pad, dilate_mm, normalize_intensity, resample, resample_like,
                         resample_to_grid, save_map, target_grid)
from .volume import (Grid, Volume, check_same_grid, load_volume, max_world_distance, save_volume,
                     to_nifti)

__all__ = ["Grid", "Volume", "check_same_grid", "crop_or_pad", "dilate_mm", "load_volume",
           "max_world_distance", "normalize_intensity", "resample", "resample_like",
           "resample_to_grid", "save_map", "save_volume", "target_grid", "to_nifti"]
