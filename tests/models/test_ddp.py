"""DDP training under torchrun (2 CPU processes, gloo) follows the loss curve of one process with
the same global batch, including an uneven last batch (shares weighted), within float tolerance."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from neuroxai.models.train import _GlobalBatches

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from torch import nn
    torch.set_num_threads(1)
    import torch.distributed as dist
    from neuroxai.models.train import TrainConfig, train_model

    if len(sys.argv) > 2 and sys.argv[2] == "ddp":
        dist.init_process_group("gloo")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(27, 1, 8, 8, 8, generator=g)
    y = (x[:, 0, 2:5, 2:5, 2:5].mean((1, 2, 3)) > 0).long()
    x[:, 0, 2:5, 2:5, 2:5] += y.view(-1, 1, 1, 1).float()
    ds = [{"image": x[i], "label": y[i]} for i in range(21)]
    val = [{"image": x[i], "label": y[i]} for i in range(21, 27)]
    torch.manual_seed(0)
    # no BatchNorm, no dropout: the one-process result is then defined for any split of a batch
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                          nn.Conv3d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                          nn.Flatten(), nn.Linear(8, 2))
    cfg = TrainConfig(epochs=3, batch_size=8, lr=3e-2, early_stopping=0, seed=3)
    res = train_model(model, ds, val, cfg, checkpoint_path=sys.argv[1] + ".ckpt",
                      distributed=dist.is_initialized())
    if not dist.is_initialized() or dist.get_rank() == 0:
        json.dump({"history": [[h["train_loss"], h["val_loss"]] for h in res.history],
                   "weights": [p.detach().flatten().tolist() for p in res.model.parameters()]},
                  open(sys.argv[1], "w"))
""")


def test_global_batches_split_each_global_batch_and_drop_only_a_tiny_last_one():
    for n, bs, world in [(21, 8, 2), (21, 8, 1), (17, 8, 1), (19, 8, 2), (5, 8, 2), (9, 8, 1)]:
        per_rank = []
        for r in range(world):
            s = _GlobalBatches(n, bs, torch.Generator().manual_seed(4), r, world)
            per_rank.append(list(s.batches()))
            assert len(per_rank[-1]) == len(s)
        ref = list(_GlobalBatches(n, bs, torch.Generator().manual_seed(4)).batches())
        one = [idx for idx, _ in _GlobalBatches(n, bs, torch.Generator().manual_seed(4), 0, 1).batches()]
        for k, parts in enumerate(zip(*per_rank)):
            merged = [i for idx, _ in parts for i in idx]
            assert sum(share for _, share in parts) == pytest.approx(1.0)
            assert all(len(idx) >= 2 for idx, _ in parts) or world == 1
            if k < len(one):
                assert merged == one[k] or world > 1 and len(merged) == len(one[k])
        # the same permutation as DataLoader(shuffle=True, generator=seeded)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(4)).tolist()
        assert [i for idx, _ in ref for i in idx] == perm[:sum(len(i) for i, _ in ref)]
    # a last batch that would leave a rank fewer than 2 subjects (BatchNorm) is dropped
    assert len(_GlobalBatches(17, 8, torch.Generator(), 0, 1)) == 2
    assert len(_GlobalBatches(19, 8, torch.Generator(), 0, 2)) == 2  # last 3 < 2 × 2 ranks
    assert len(_GlobalBatches(21, 8, torch.Generator(), 0, 2)) == 3  # last 5 = 3 + 2


def test_ddp_two_ranks_follow_one_process_with_the_same_global_batch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.json")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", "29541", str(script), str(tmp_path / "two.json"), "ddp"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one.json").read_text())
    b = json.loads((tmp_path / "two.json").read_text())
    ha, hb = torch.tensor(a["history"]), torch.tensor(b["history"])
    assert ha.shape == (3, 2)
    assert ha[-1, 0] < ha[0, 0]  # it learns: the curve being compared is not flat
    torch.testing.assert_close(hb, ha, rtol=1e-5, atol=1e-6)
    for wa, wb in zip(a["weights"], b["weights"]):
        torch.testing.assert_close(torch.tensor(wb), torch.tensor(wa), rtol=1e-4, atol=1e-6)
