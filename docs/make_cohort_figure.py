"""Draw docs/cohort.png: three embedded subjects (axial and coronal), hippocampus outlined in red,
lesions in yellow. Usage: python docs/make_cohort_figure.py COHORT_DIR"""
import sys
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

root = Path(sys.argv[1])
m = pd.read_csv(root / "manifest.csv")
fig, ax = plt.subplots(2, 3, figsize=(8, 5.6))
for j in range(3):
    img = nib.load(root / m.image[j]).get_fdata()
    seg = nib.load(root / m.segmentation[j]).get_fdata()
    les = nib.load(root / m.lesion_mask[j]).get_fdata() > 0.5
    hip = np.isin(np.round(seg), [41, 42])
    c = np.argwhere(hip).mean(0).round().astype(int)
    for r, (sl, name) in enumerate([((slice(None), slice(None), c[2]), "axial"), ((slice(None), c[1], slice(None)), "coronal")]):
        a = ax[r, j]
        a.imshow(img[sl].T, cmap="gray", origin="lower")
        a.contour(hip[sl].T, [0.5], colors="r", linewidths=0.8)
        if les[sl].any():
            a.contour(les[sl].T, [0.5], colors="y", linewidths=0.8)
        a.set_xticks([])
        a.set_yticks([])
        if j == 0:
            a.set_ylabel(name)
    ax[0, j].set_title(f"{m.subject_id[j]} (age {m.age[j]:.0f})", fontsize=9)
fig.suptitle("embedded cohort: MNI152 2009a + AAL3, per-subject deformation; red: hippocampus, yellow: lesions",
             fontsize=9)
fig.savefig(Path(__file__).parent / "cohort.png", dpi=80, bbox_inches="tight", metadata={"Software": None})
