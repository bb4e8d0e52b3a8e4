"""Stage ``randomization``: model-parameter randomization (Adebayo et al. 2018, "Sanity checks
for saliency maps").

Each method's maps on the trained model are compared with its maps on copies whose layers are
re-initialized (cascading from the output, or one layer at a time), for the first
``n_subjects`` scored test subjects, each map read with the scoring's sign convention
(``scoring.polarity`` or ``sign``). A method whose final similarity stays at or above
``max_similarity`` does not depend on what the model learned. Keyed on the task, the model's
fingerprint, the subjects, the protocol's section, the manifest's content hash, the grid, the
device type, the methods and ``run.target``.
"""
from __future__ import annotations

from ..context import RunContext
from ..rundir import atomic_write_json, read_json, stable_hash
from ..store import SubjectStore
from ...attribution.baselines import is_baseline
from .attribute import method_params
from .tasks import explained, is_null, predictions, scored_subjects


def model_randomization(ctx: RunContext, tasks: dict, models: dict, store: SubjectStore) -> dict:
    """``{task_id: {method: Sanity}}`` (:class:`neuroxai.report.schema.Sanity`: the layers, the
    similarity after each, the final similarity, the threshold, passed)."""
    from ...report.schema import Sanity
    from ...attribution import attribute
    from ...models.randomize import cascading_randomization, independent_randomization, weight_layers
    from ...scoring.sanity import similarity

    spec = ctx.protocol.sanity.model_randomization
    if not spec.enabled:
        return {}
    out: dict = {}
    for task_id, task in tasks.items():
        if is_null(task_id):
            continue
        tm = models[task_id]
        ids = scored_subjects(ctx, task)[: spec.n_subjects]
        if not ids:
            continue
        sc = ctx.protocol.scoring
        key = stable_hash([task_id, task.summary(), tm.fingerprint, ids, spec.model_dump(), ctx.manifest_hash,
                           ctx.grid, ctx.device.type,
                           [m.model_dump() for m in ctx.protocol.methods], ctx.protocol.run.target,
                           sc.polarity, sc.sign])
        d = ctx.rd.stage("randomization", key)
        if not ctx.rd.is_done("randomization", key):
            b = store.batch(ids, ctx.device)
            x = task.modify_image(b)
            # the trained model's targets, kept for every randomized copy (run.target, as the scores)
            target, _ = explained(task, ids, predictions(tm.model, x, task.kind), ctx.protocol.run.target,
                                  ctx.device)
            brain = b.get("brain_mask")
            res: dict = {}
            methods = [m for m in ctx.protocol.methods if not is_baseline(m.name)]
            gen = (cascading_randomization if spec.mode == "cascading" else independent_randomization)
            n_steps = len(weight_layers(tm.model))
            # The maps are compared with the sign convention they are scored with (scoring.polarity).
            params = {m.key: method_params(ctx, task, store, m, batch=b) for m in methods}
            refs = {m.key: sc.evidence(attribute(tm.model, x, target, m.name, **params[m.key]).float())
                    for m in methods}
            curves = {m.key: ([], []) for m in methods}
            # One randomized copy at a time (a DenseNet has ~120 layers: never hold them all).
            with ctx.progress.task(f"model randomization on {task_id}", len(methods) * n_steps) as bar:
                for layer_name, rmodel in gen(tm.model, seed=ctx.protocol.run.seed):
                    rmodel.eval()
                    for mspec in methods:
                        a = sc.evidence(attribute(rmodel, x, target, mspec.name, **params[mspec.key]).float())
                        curves[mspec.key][0].append(layer_name)
                        curves[mspec.key][1].append(
                            similarity(refs[mspec.key], a, spec.similarity, mask=brain).mean().item())
                        bar.advance()
                    del rmodel
            for mspec in methods:
                layers, sims = curves[mspec.key]
                final = sims[-1] if sims else float("nan")
                res[mspec.key] = {"layers": layers, "similarity": sims, "measure": spec.similarity,
                                  "final_similarity": final, "threshold": spec.max_similarity,
                                  "passed": bool(final < spec.max_similarity)}
            atomic_write_json(d / "randomization.json", res)
            ctx.rd.mark_done("randomization", key)
        out[task_id] = {k: Sanity.model_validate(v) for k, v in read_json(d / "randomization.json").items()}
    return out
