"""What cIDP correction does to specificity: voxel–target correlation inside vs outside the region.

For a cohort (a manifest) and a region, the corrected measure (``region_volume`` with
``correction: {pca_components: k}``, as a continuous target) at each ``k``; the Pearson
correlation across subjects between each voxel's intensity (z-scored in the brain per subject)
and the measure (:func:`neuroxai.tasks.cidp.voxel_target_correlation`; Siegel et al. 2025 check
the same map, as permuted-OLS t-scores, after each correction step). Inside = voxels in the signal
support (or the region) of at least half the subjects; outside = the rest of the brain.

    python benchmarks/cidp_specificity.py MANIFEST --k 0 10 50
"""
from __future__ import annotations

import argparse
import sys

import nibabel as nib
import numpy as np


def _load(paths, dtype=np.float32):
    return np.stack([np.asarray(nib.load(p).dataobj, dtype=dtype) for p in paths])


def main(argv=None) -> int:
    from scipy import stats

    from neuroxai.data.manifest import load_manifest
    from neuroxai.tasks import build_task
    from neuroxai.tasks.cidp import voxel_target_correlation

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("--k", type=int, nargs="+", default=[0, 10, 50])
    ap.add_argument("--regions", nargs="+", default=["Hippocampus_L", "Hippocampus_R"])
    ap.add_argument("--alpha", type=float, default=0.001)
    a = ap.parse_args(argv)
    man = load_manifest(a.manifest)
    img = _load(man["image"])
    brain = _load(man["brain_mask"], np.uint8) > 0
    for i in range(len(img)):  # z-score in each subject's brain, as the model sees it
        v = img[i][brain[i]]
        img[i] = (img[i] - v.mean()) / (v.std() + 1e-6)
    common = brain.all(0)
    support = (_load(man["signal_mask"], np.uint8) > 0).mean(0) >= 0.5
    from neuroxai.tasks.regions import label_table, resolve_regions

    ids = resolve_regions(a.regions, label_table(man))
    region = np.isin(_load(man["segmentation"], np.int16), ids).mean(0) >= 0.5
    pos = {s: i for i, s in enumerate(man["subject_id"].astype(str))}
    print(f"{len(man)} subjects, grid {img.shape[1:]}, brain voxels {int(common.sum())}, "
          f"support {int((support & common).sum())}, region {int((region & common).sum())}")
    print("| k | mean abs r: support | region | outside | ratio support/outside | "
          f"share p<{a.alpha:g}: support | outside |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for k in a.k:
        t = build_task("region_volume", man, seed=0, regions=a.regions, target="regression",
                       correction={"pca_components": k})
        rows = [pos[s] for s in t.subject_ids]
        x = img[rows][:, common]
        r = np.abs(voxel_target_correlation(x.astype(np.float64), np.asarray(t.labels, np.float64)))
        n = len(rows)
        tcrit = stats.t.ppf(1 - a.alpha / 2, n - 2)
        rcrit = tcrit / np.sqrt(n - 2 + tcrit ** 2)
        ins, reg, out = support[common], region[common], ~support[common]
        print(f"| {k} | {r[ins].mean():.3f} | {r[reg].mean():.3f} | {r[out].mean():.3f} | "
              f"{r[ins].mean() / r[out].mean():.2f} | {(r[ins] > rcrit).mean():.2f} | {(r[out] > rcrit).mean():.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
