"""Re-score a finished run's saved maps (``save_maps: npz16``) under each sign convention, per class.

No attribution: the maps stored in the attribute chunks (the run's explained output, ``run.target``)
are read back, and scored against the same ground truth with ``polarity: positive`` and
``absolute``. Printed per task × method × polarity: the main metric on the chance (0) → oracle (1)
scale, over all subjects and per class, and the Mann–Whitney p of the class gap (issue 21).

    python benchmarks/rescore_polarity.py --protocol quick --run reports/demo [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import stats as sst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="quick")
    ap.add_argument("--run", required=True)
    ap.add_argument("--metric", default="relevance_rank_accuracy")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    from neuroxai.protocol.context import chunks
    from neuroxai.protocol.stages.tasks import is_null, scored_subjects
    from neuroxai.scoring import score
    from polarity_target import open_run  # the sibling script (benchmarks/ is on the path)

    proto, ctx, tasks, store = open_run(a.protocol, a.run)
    chunks_of = _chunk_folders(Path(a.run), a.metric)
    rows = []
    for tid, task in tasks.items():
        if is_null(tid) or task.kind != "classification":
            continue
        ids = scored_subjects(ctx, task)
        pos = {s: i for i, s in enumerate(task.subject_ids)}
        per: dict = {}
        for m in proto.methods:
            maps = chunks_of.get((tid, m.key))
            if maps is None:
                continue
            for sids in chunks(ids, proto.run.batch_size):
                b = store.batch(sids, ctx.device)
                gt = task.ground_truth(b)
                attr = torch.stack([torch.as_tensor(maps[s], dtype=torch.float32) for s in sids])[:, None]
                y = [int(task.labels[pos[s]]) for s in sids]
                for pol in ("positive", "absolute"):
                    s = score(attr, gt, [a.metric], brain_mask=b.get("brain_mask"), spacing=store.spacing,
                              polarity=pol)
                    d = per.setdefault((m.key, pol), {"v": [], "ch": [], "y": []})
                    d["v"] += s[a.metric].tolist()
                    d["ch"] += s[f"{a.metric}_chance"].tolist()
                    d["y"] += y
        for (mk, pol), d in per.items():
            v, ch, y = (np.array(d[k], float) for k in ("v", "ch", "y"))
            o = np.array(per[("oracle", pol)]["v"]) if ("oracle", pol) in per else np.ones_like(v)
            sc = (v - ch) / (o - ch)
            a1, a0 = sc[y == 1], sc[y == 0]
            r = {"task": tid, "method": mk, "polarity": pol, "n": len(v), "scaled_all": float(sc.mean()),
                 "scaled_class1": float(a1.mean()), "scaled_class0": float(a0.mean()),
                 "p_class_gap": float(sst.mannwhitneyu(a1, a0).pvalue)}
            rows.append(r)
            print(f"{tid:20s} {mk:12s} {pol:8s} n={r['n']:3d} all {r['scaled_all']:.3f} "
                  f"class1 {r['scaled_class1']:.3f} class0 {r['scaled_class0']:.3f} p(gap) {r['p_class_gap']:.2g}",
                  flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


def _chunk_folders(run: Path, metric: str) -> dict:
    """``{(task, method): {subject: map}}`` from every finished attribute stage folder that holds
    maps. A folder's task and method are found by its scores: the first chunk's ``metric`` values
    equal that (task, method)'s rows of the run's ``results.json`` score table."""
    sc = json.loads((run / "results.json").read_text())["scores"]
    table: dict = {}
    for t, s, m, k, v in zip(sc["task"], sc["subject_id"], sc["method"], sc["metric"], sc["value"]):
        if k == metric:
            table.setdefault((t, m), {})[str(s)] = v
    out: dict = {}
    for d in sorted((run / "stages" / "attribute").iterdir()):
        files = sorted(d.glob("chunk_*.npz"))
        if not files:
            continue
        z = np.load(files[0])
        if "maps" not in z.files:
            continue
        first = {str(s): float(v) for s, v in zip(z["subject_id"], z[f"score__{metric}"])}
        hits = [key for key, vals in table.items()
                if all(s in vals and abs(vals[s] - v) < 1e-12 for s, v in first.items())]
        if len(hits) != 1:
            continue
        maps = {}
        for f in files:
            z = np.load(f)
            maps.update({str(s): z["maps"][i].astype(np.float32) for i, s in enumerate(z["subject_id"])})
        out[hits[0]] = maps
    return out


if __name__ == "__main__":
    raise SystemExit(main())
