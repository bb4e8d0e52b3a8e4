"""A newcomer's own single-logit binary classifier (BCEWithLogitsLoss, plain PyTorch, one epoch on
the embedded cohort) validated through the CLI: it gets a verdict, and scores.csv says per subject
which class was explained."""
from __future__ import annotations

import json
import textwrap

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import yaml
from typer.testing import CliRunner

from neuroxai.cli import app
from neuroxai.data.cohort import generate_cohort
from neuroxai.data.manifest import load_manifest
from neuroxai.tasks import build_task

NET = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                                          nn.Conv3d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1))
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))  # (B, 1): one logit
""")


def test_single_logit_model_through_cli_gets_a_verdict(tiny_protocol, tmp_path, monkeypatch):
    manifest = generate_cohort(tmp_path / "cohort", n=40, spacing=8.0, seed=0)
    spec = yaml.safe_load(tiny_protocol.read_text())
    task_params = spec["tasks"][0]["params"]
    task = build_task("region_volume", load_manifest(manifest), seed=0, **task_params)
    df = pd.read_csv(manifest)
    paths = dict(zip(df.subject_id.astype(str), df.image))

    def img(sid):
        a = np.asarray(nib.load(manifest.parent / paths[sid]).get_fdata(), np.float32)
        return torch.from_numpy((a - a.mean()) / a.std())[None]

    train = [i for i, s in enumerate(task.split) if s == "train"]
    x = torch.stack([img(task.subject_ids[i]) for i in train])
    y = torch.tensor([float(task.labels[i]) for i in train])
    pkg = tmp_path / "userpkg_b26"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "net.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    from userpkg_b26.net import Net

    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for i in range(0, len(x), 4):  # one epoch, the user's own loop
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[i:i + 4])[:, 0], y[i:i + 4])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(net.state_dict(), tmp_path / "weights.pt")

    spec["tasks"][0]["null_control"] = False
    spec["methods"] = [{"name": "gradient"}, {"name": "lrp"}, {"name": "gradcam"},
                       {"name": "random", "params": {"seed": 0}}]
    spec["sanity"] = {"model_randomization": {"enabled": True, "n_subjects": 2}}
    proto = tmp_path / "mine.yaml"
    proto.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["validate", str(proto), "--data", str(manifest), "--model", "userpkg_b26.net:Net",
                                   "--weights", str(tmp_path / "weights.pt"), "--out", str(out), "-q"])
    assert res.exit_code in (0, 1, 3), res.output  # a verdict (3: INCONCLUSIVE, no FAIL), not an error
    results = json.loads((out / "results.json").read_text())
    verdicts = {m["method"]: m["verdict"] for m in results["methods"]}
    assert set(verdicts) >= {"gradient", "lrp", "gradcam"}
    assert set(verdicts.values()) <= {"PASS", "FAIL", "INCONCLUSIVE"}
    assert results["tasks"][0]["model"]["auroc"] is not None
    scores = pd.read_csv(out / "report" / "scores.csv")
    assert {"label", "prediction", "target"} <= set(scores.columns)
    per = scores.drop_duplicates("subject_id").set_index("subject_id")
    truth = dict(zip(task.subject_ids, task.labels))
    assert all(per.loc[s, "label"] == truth[s] for s in per.index)
    assert (per["target"] == per["label"]).all()  # run.target: label (default)
    assert set(per["prediction"]) <= {0, 1}
    sanity = {m["method"]: m["sanity"] for m in results["methods"] if m.get("sanity")}
    assert "lrp" in sanity and sanity["lrp"]["layers"][0].startswith("model.")
