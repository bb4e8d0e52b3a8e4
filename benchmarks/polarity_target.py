"""How the sign of evidence and the explained output move localization scores (issue 21).

For a finished run (its cached cohort, tasks, store and models are reused; nothing is trained),
every method under test is re-attributed on each task's scored test subjects for three choices of
the explained output, and each map is scored under two sign conventions:

* target ``label``     — the logit of the subject's true class (the runner's default);
* target ``signal``    — the logit of the signal class (class 1) for every subject;
* target ``predicted`` — the logit of the model's predicted class;
* polarity ``positive`` — only positive relevance counts; ``absolute`` — |relevance| (the study's).

Printed per task × method × target × polarity × class: the mean of the main metric on the chance
(0) → oracle (1) scale, with the subjects of each class separately, and the Wilcoxon p of class 1
vs class 0 (a sign convention that makes the classes incomparable shows a large gap there).

    python benchmarks/polarity_target.py --protocol quick --run reports/demo [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats as sst


def open_run(protocol: str, run: str):
    """``(protocol, ctx, tasks, store)`` of a finished run, from its cached stages (CPU)."""
    from neuroxai.progress import Progress
    from neuroxai.protocol.context import RunContext
    from neuroxai.protocol.rundir import RunDir
    from neuroxai.protocol.schema import load_protocol
    from neuroxai.protocol.stages.data import load_store, prepare_data
    from neuroxai.protocol.stages.tasks import build_tasks

    proto = load_protocol(protocol)
    ctx = RunContext(proto, RunDir(run), torch.device("cpu"), Progress())
    prepare_data(ctx)
    tasks = build_tasks(ctx)
    return proto, ctx, tasks, load_store(ctx, tasks)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="quick")
    ap.add_argument("--run", required=True, help="a finished run folder of that protocol")
    ap.add_argument("--metric", default="relevance_rank_accuracy")
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    a = ap.parse_args(argv)

    from neuroxai.attribution import attribute
    from neuroxai.protocol.context import chunks
    from neuroxai.protocol.stages.tasks import is_null, scored_subjects, targets
    from neuroxai.protocol.stages.train import train_stage
    from neuroxai.scoring import score
    from neuroxai.scoring.localization import metric_params

    proto, ctx, tasks, store = open_run(a.protocol, a.run)
    rows = []
    for tid, task in tasks.items():
        if is_null(tid) or task.kind != "classification":
            continue
        tm = train_stage(ctx, tid, task, store)
        ids = scored_subjects(ctx, task)
        per: dict = {}
        for sids in chunks(ids, proto.run.batch_size):
            b = store.batch(sids, ctx.device)
            x = task.modify_image(b)
            gt = task.ground_truth(b)
            brain = b.get("brain_mask")
            label = targets(task, sids, ctx.device)
            with torch.no_grad():
                pred = tm.model(x).argmax(1)
            tgt = {"label": label, "signal": torch.ones_like(label), "predicted": pred}
            mets = metric_params({a.metric: {}}, proto.scoring, atlas=b.get("segmentation"),
                                 true_region=getattr(task, "region_ids", None))
            for m in proto.methods:
                if m.name in ("random", "edge_detector"):
                    continue
                for tname, t in tgt.items():
                    if m.name == "oracle" and tname != "label":
                        continue
                    params = {**m.params, "mask": gt} if m.name == "oracle" else m.params
                    attr = attribute(tm.model, x, t, m.name, **params).float()
                    for pol in ("positive", "absolute"):
                        s = score(attr, gt, mets, brain_mask=brain, spacing=store.spacing, polarity=pol)
                        d = per.setdefault((m.key, tname, pol), {"v": [], "ch": [], "y": []})
                        d["v"] += s[a.metric].double().tolist()
                        d["ch"] += s[f"{a.metric}_chance"].double().tolist()
                        d["y"] += label.tolist()
        oracle = {pol: np.array(per[("oracle", "label", pol)]["v"]) for pol in ("positive", "absolute")} \
            if ("oracle", "label", "positive") in per else None
        for (mk, tname, pol), d in per.items():
            v, ch, y = np.array(d["v"]), np.array(d["ch"]), np.array(d["y"])
            o = oracle[pol] if oracle is not None else np.ones_like(v)
            sc = (v - ch) / np.where(np.abs(o - ch) > 1e-12, o - ch, np.nan)
            r = {"task": tid, "method": mk, "target": tname, "polarity": pol, "n": int(len(v)),
                 "scaled_all": float(np.nanmean(sc)),
                 "scaled_class1": float(np.nanmean(sc[y == 1])), "scaled_class0": float(np.nanmean(sc[y == 0])),
                 "raw_class1": float(np.nanmean(v[y == 1])), "raw_class0": float(np.nanmean(v[y == 0]))}
            a1, a0 = sc[y == 1], sc[y == 0]
            r["p_class_gap"] = float(sst.mannwhitneyu(a1[~np.isnan(a1)], a0[~np.isnan(a0)]).pvalue) \
                if len(a1) > 2 and len(a0) > 2 else None
            rows.append(r)
            print(f"{tid:22s} {mk:12s} {tname:9s} {pol:8s} n={r['n']:3d} all {r['scaled_all']:.3f} "
                  f"class1 {r['scaled_class1']:.3f} class0 {r['scaled_class0']:.3f} p(gap) {r['p_class_gap']:.2g}")
            sys.stdout.flush()
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
