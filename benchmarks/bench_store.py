"""Is reading subjects from the run's store slower than the model consumes them?

Writes a store of N synthetic subjects (image float32 + segmentation int16 + two masks) on the
grid of a given spacing (the embedded cohort's grids), then measures, in one process:

* subjects/s read by ``SubjectStore.batch`` (cold: the files were just written, so partly in the
  page cache — as in a run, where the store stage writes them shortly before training), and
* subjects/s of one forward+backward pass of the model on the same grid (batch 8, CPU threads as
  given), for ``small_cnn`` and ``sfcn``.

    python benchmarks/bench_store.py --spacing 2 --n 64
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

GRIDS = {1.0: (165, 201, 175), 1.5: (111, 135, 117), 2.0: (83, 101, 88), 4.0: (42, 51, 44)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spacing", type=float, default=2.0, choices=sorted(GRIDS))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--models", nargs="+", default=["small_cnn", "sfcn"])
    args = ap.parse_args()
    from neuroxai.models import MODELS
    from neuroxai.protocol.store import write_store

    shape = GRIDS[args.spacing]
    rng = np.random.default_rng(0)
    keys = ["image", "segmentation", "brain_mask", "signal_mask"]
    aff = np.diag([args.spacing] * 3 + [1.0])

    def item(i):
        return {"subject_id": f"sub-{i:04d}", "affine": aff, "image": rng.random((1, *shape), np.float32),
                "segmentation": rng.integers(0, 170, (1, *shape)).astype(np.int16),
                "brain_mask": rng.random((1, *shape)) > 0.3, "signal_mask": rng.random((1, *shape)) > 0.99}

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = write_store(Path(tmp), item, args.n, keys)
        write_s = time.perf_counter() - t
        ids = store.ids
        t = time.perf_counter()
        for c in range(0, len(ids), args.batch):
            store.batch(ids[c:c + args.batch], torch.device("cpu"))
        read = len(ids) / (time.perf_counter() - t)
        per_subject_mb = sum(store.path(k, 0).stat().st_size for k in keys) / 2 ** 20
        print(f"grid {shape} ({args.spacing} mm), {per_subject_mb:.1f} MB per subject on disk, "
              f"threads {torch.get_num_threads()}")
        print(f"store write: {args.n / write_s:.1f} subjects/s; read (batch {args.batch}, all keys): {read:.1f} subjects/s")
        for name in args.models:
            model = MODELS[name](in_channels=1, n_outputs=2)
            x = torch.randn(args.batch, 1, *shape)
            y = torch.zeros(args.batch, dtype=torch.long)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            loss = torch.nn.functional.cross_entropy(model(x), y)  # warm-up
            loss.backward()
            reps, t = 2, time.perf_counter()
            for _ in range(reps):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            fb = reps * args.batch / (time.perf_counter() - t)
            slower = "the model" if fb < read else "reading"
            print(f"{name}: forward+backward {fb:.1f} subjects/s → reading is {read / fb:.1f}× the model's "
                  f"pace; slower: {slower}")


if __name__ == "__main__":
    main()
