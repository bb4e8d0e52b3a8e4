"""Time neuroxai's attribution methods against Captum, MONAI and Zennit on the same model and input.

    .venv/bin/python benchmarks/bench_attribution.py [--device cpu] [--repeats 2] [--batch 4]
        [--shape 64 80 64] [--channels 8 16 32 64] [--only smoothgrad gradcam ...] [--study] [--quick]

``--study`` times the methods of Siegel et al. 2025 instead (``STUDY``: DeepLift with a zero and a
mean-image reference, input×gradient, guided backprop, Guided Grad-CAM, Grad-CAM at an earlier
block (the second convolution), HiResCAM, LayerCAM, EigenCAM and the LRP composites
ExcitationBackprop, EpsilonAlpha2Beta1(Flat), EpsilonGamma) beside Captum, pytorch-grad-cam (when
importable) and Zennit.

Model: the SFCN-like test model (``tests/attribution/_models.py: sfcn_like``, conv-BN-maxpool-ReLU
blocks, float32, eval). The floor is one plain forward + backward to the input of the batch;
every method is reported in seconds (best of ``--repeats`` after one warm-up) and in multiples of
that floor. Peers run with the settings a user would pick, chunked like ours where they allow it
(Captum IG ``internal_batch_size=32``, Captum Occlusion ``perturbations_per_eval=32 // batch``);
Captum NoiseTunnel runs all samples in one pass (its default). ``max rel diff`` compares our map
with the peer's where both compute the same quantity (SmoothGrad draws different noise; MONAI's
Grad-CAM is normalized, so ``1 − minmax(ours)`` is compared). ``--quick`` (CI size) is run by
``tests/test_benchmarks.py``; the numbers in ``RESULTS.md`` come from the full size.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
try:  # a real (or fuller) torchvision wins; else the tests' stub, so zennit imports
    import torchvision  # noqa: F401
except Exception:
    sys.path.insert(0, str(ROOT / "tests" / "_stubs"))

ALL = ["gradient", "smoothgrad", "gradcam", "gradcam_pp", "integrated_gradients", "occlusion", "lrp"]
#: the study's methods (``--study``); LRP composites as ``lrp:<composite>``
STUDY = ["deeplift", "deeplift_mean", "input_x_gradient", "guided_backprop", "guided_gradcam", "gradcam_block",
         "hirescam", "layercam", "eigencam", "lrp:excitation_backprop", "lrp:epsilon_alpha2_beta1",
         "lrp:epsilon_alpha2_beta1_flat", "lrp:epsilon_gamma", "lrp_densenet", "lrp_resnet"]


def _timer(device):
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def best(fn, repeats):
        fn()  # warm-up (allocator, hooks, lazy imports)
        out, t_best = None, float("inf")
        for _ in range(repeats):
            sync()
            t = time.perf_counter()
            out = fn()
            sync()
            t_best = min(t_best, time.perf_counter() - t)
        return t_best, out

    return best


def _paired(best, fn, floor, repeats: int):
    """``fn`` warmed up, then timed ``repeats`` times, each run right after one of its ``floor``:
    ``(median ratio to the floor, best seconds, last output)`` — load on a shared machine slows
    adjacent runs alike, so the ratio holds where the seconds do not."""
    fn()
    ratios, sec, out = [], float("inf"), None
    for _ in range(repeats):
        f, _ = best(floor, 1)
        s, out = best(fn, 1)
        ratios.append(s / f)
        sec = min(sec, s)
    return sorted(ratios)[len(ratios) // 2], sec, out


def _rel(a, b):
    if a is None or b is None:
        return None
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _minmax(a):
    lo = a.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
    hi = a.flatten(1).amax(1).view(-1, 1, 1, 1, 1)
    return (a - lo) / (hi - lo)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 80, 64])
    ap.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--only", nargs="+", choices=ALL + STUDY, default=None)
    ap.add_argument("--study", action="store_true", help="the study's methods (STUDY) instead of ALL")
    ap.add_argument("--paired", action="store_true",
                    help="on a shared, loaded machine: time the floor right before each run of a method "
                         "and report the median of the pairs' ratios as × floor")
    ap.add_argument("--smoothgrad-n", type=int, default=10)
    ap.add_argument("--ig-steps", type=int, default=32)
    ap.add_argument("--occlusion-patch", type=int, default=16)
    ap.add_argument("--quick", action="store_true",
                    help="CI size: 16×20×16, batch 2, channels 4 8, one repeat, n=4, 4 IG steps, patch 8")
    args = ap.parse_args(argv)
    if args.quick:
        args.shape, args.batch, args.channels, args.repeats = [16, 20, 16], 2, [4, 8], 1
        args.smoothgrad_n, args.ig_steps, args.occlusion_patch = 4, 4, 8
    warnings.filterwarnings("ignore")
    if args.only is None:
        args.only = STUDY if args.study else ALL

    from captum.attr import (IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion,
                             Saliency)
    from monai.visualize import GradCAM as MonaiGradCAM

    from neuroxai.attribution import attribute
    from neuroxai.attribution.cam import default_layer
    from tests.attribution._models import sfcn_like

    dev = torch.device(args.device)
    best = _timer(dev)
    model = sfcn_like(channels=tuple(args.channels)).to(dev).eval()
    x = torch.randn(args.batch, 1, *args.shape, generator=torch.Generator().manual_seed(0)).to(dev)
    t = torch.tensor([1, 0] * (args.batch // 2) + [1] * (args.batch % 2), device=dev)
    layer = default_layer(model)
    layer_mod = dict(model.named_modules())[layer]

    def plain():
        xi = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi).gather(1, t.view(-1, 1)).sum(), xi)
        return g

    floor, _ = best(plain, args.repeats)
    rows = []  # (method, implementation, seconds, rel diff)

    paired: dict = {}  # (method, impl) -> median ratio of adjacent (method, floor) timings

    def run(method, impl, fn, ours=None, compare=None):
        if args.paired:
            paired[(method, impl)], sec, out = _paired(best, fn, plain, args.repeats)
        else:
            sec, out = best(fn, args.repeats)
        rel = _rel(ours, compare(out)) if (ours is not None and compare is not None) else None
        rows.append((method, impl, sec, rel))
        return out

    if "gradient" in args.only:
        o = run("gradient", "neuroxai", lambda: attribute(model, x, t, "gradient"))
        run("gradient", "Captum Saliency", lambda: Saliency(model).attribute(x, target=t, abs=False),
            o, lambda r: r)
    if "smoothgrad" in args.only:
        n = args.smoothgrad_n
        run(f"smoothgrad n={n}", "neuroxai",
            lambda: attribute(model, x, t, "smoothgrad", n_samples=n, sigma=0.15))
        sd = float(0.15 * (x.max() - x.min()))
        run(f"smoothgrad n={n}", "Captum NoiseTunnel",
            lambda: NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=n, stdevs=sd,
                                                           target=t, abs=False))
    if "gradcam" in args.only:
        o = run("gradcam", "neuroxai", lambda: attribute(model, x, t, "gradcam", layer=layer))
        run("gradcam", "Captum LayerGradCam",
            lambda: LayerAttribution.interpolate(LayerGradCam(model, layer_mod).attribute(
                x, target=t, relu_attributions=True), x.shape[2:], "trilinear"), o, lambda r: r)
        t1 = int(t[0])  # MONAI takes one class for the batch
        o1 = attribute(model, x, t1, "gradcam", layer=layer)
        ok = o1.flatten(1).amax(1) > o1.flatten(1).amin(1)  # a constant (all-zero) map has no min-max form
        run("gradcam", "MONAI GradCAM", lambda: MonaiGradCAM(nn_module=model, target_layers=layer)(x, class_idx=t1),
            (1 - _minmax(o1))[ok] if ok.any() else None, lambda r: r[ok])
    if "gradcam_pp" in args.only:
        run("gradcam_pp", "neuroxai", lambda: attribute(model, x, t, "gradcam_pp", layer=layer))
    if "integrated_gradients" in args.only:
        s = args.ig_steps
        o = run(f"IG {s} steps", "neuroxai", lambda: attribute(model, x, t, "integrated_gradients", steps=s))
        run(f"IG {s} steps", "Captum IG",
            lambda: IntegratedGradients(model).attribute(x, target=t, n_steps=s, internal_batch_size=32),
            o, lambda r: r)
    if "occlusion" in args.only:
        p = args.occlusion_patch
        o = run(f"occlusion {p}/{p}", "neuroxai",
                lambda: attribute(model, x, t, "occlusion", patch=p, stride=p))
        run(f"occlusion {p}/{p}", "Captum Occlusion",
            lambda: Occlusion(model).attribute(x, sliding_window_shapes=(1, p, p, p), strides=(1, p, p, p),
                                               target=t, perturbations_per_eval=max(1, 32 // args.batch)),
            o, lambda r: r)
    if "lrp" in args.only:
        o = run("lrp epsilon_plus_flat", "neuroxai",
                lambda: attribute(model, x, t, "lrp", composite="epsilon_plus_flat", start="one_hot"))
        try:
            from zennit.attribution import Gradient
            from zennit.canonizers import SequentialMergeBatchNorm
            from zennit.composites import EpsilonPlusFlat
        except ImportError as e:  # pragma: no cover
            rows.append(("lrp epsilon_plus_flat", f"Zennit (unavailable: {e})", float("nan"), None))
        else:
            onehot = torch.nn.functional.one_hot(t, model(x[:1]).shape[1]).to(x.dtype)

            def zennit():
                with Gradient(model, EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])) as attributor:
                    return attributor(x, onehot)[1]

            run("lrp epsilon_plus_flat", "Zennit EpsilonPlusFlat", zennit, o, lambda r: r)

    notes = _study(args, model, x, t, layer, layer_mod, run, rows)
    notes += _study_models(args, best, rows, paired)

    print(f"device {dev} | torch threads {torch.get_num_threads()} | batch {args.batch} | shape "
          f"{tuple(args.shape)} | SFCN-like channels {tuple(args.channels)} | CAM layer {layer!r} | "
          f"best of {args.repeats}")
    print(f"floor (plain fwd+bwd to input): {floor:.4g} s = {args.batch / floor:.1f} volumes/s"
          + (" | × floor: median over repeats of (method ÷ the floor timed just before it)" if args.paired else ""))
    print()
    print(f"| {'method':<22} | {'implementation':<24} | {'seconds':>8} | {'× floor':>7} | {'vol/s':>7} | "
          f"{'× ours':>6} | {'max rel diff':>12} |")
    print(f"|{'-' * 24}|{'-' * 26}|{'-' * 10}:|{'-' * 8}:|{'-' * 8}:|{'-' * 7}:|{'-' * 13}:|")
    ours_sec = {m: s for m, impl, s, _ in rows if impl == "neuroxai"}
    own_floor = {m: f for m, f in _OWN_FLOOR.items()}
    for method, impl, sec, rel in rows:
        ratio = sec / ours_sec[method] if method in ours_sec else float("nan")
        rel_s = "" if rel is None else f"{rel:.1e}"
        x_floor = paired.get((method, impl), sec / own_floor.get(method, floor))
        print(f"| {method:<22} | {impl:<24} | {sec:8.3f} | {x_floor:7.2f} | {args.batch / sec:7.1f} | "
              f"{ratio:6.2f} | {rel_s:>12} |")
    for line in notes:
        print(line)
    return 0


def _study(args, model, x, t, layer, layer_mod, run, rows) -> list[str]:
    """Time the ``STUDY`` methods in ``args.only`` (appending to ``rows`` through ``run``); returns
    note lines for what the table cannot say."""
    from captum.attr import DeepLift, GuidedBackprop, GuidedGradCam, InputXGradient

    from neuroxai.attribution import attribute

    notes = []
    if "deeplift" in args.only:
        o = run("deeplift zeros", "neuroxai", lambda: attribute(model, x, t, "deeplift"))
        r = run("deeplift zeros", "Captum DeepLift", lambda: DeepLift(model).attribute(x, baselines=0, target=t))
        # not a max-rel-diff column entry: on a MaxPool → ReLU model Captum's map is not the
        # chain rule (see neuroxai/attribution/deeplift.py), so the two differ by design
        with torch.no_grad():
            delta = (model(x) - model(torch.zeros_like(x))).gather(1, t.view(-1, 1))[:, 0].double()

        def gap(a):
            return float(((a.detach().double().flatten(1).sum(1) - delta).abs() / delta.abs()).max())

        notes.append(f"deeplift: max rel diff to Captum {_rel(o, r):.1e}; summation-to-delta error "
                     f"(|Σmap − Δf| / |Δf|) ours {gap(o):.1e}, Captum {gap(r):.1e}")
    if "deeplift_mean" in args.only:
        # the mean image: the voxel-wise mean of 8 other volumes (a training split's stand-in), the
        # tensor a protocol's `baseline: train_mean` resolves to
        xm = torch.randn(8, *x.shape[1:], generator=torch.Generator().manual_seed(1)).to(x.device).mean(0, keepdim=True)
        o = run("deeplift mean image", "neuroxai", lambda: attribute(model, x, t, "deeplift", baseline=xm))
        r = run("deeplift mean image", "Captum DeepLift",
                lambda: DeepLift(model).attribute(x, baselines=xm.expand_as(x), target=t))
        with torch.no_grad():
            dm = (model(x) - model(xm.expand_as(x))).gather(1, t.view(-1, 1))[:, 0].double()
        gm = [float(((a.detach().double().flatten(1).sum(1) - dm).abs() / dm.abs()).max()) for a in (o, r)]
        notes.append(f"deeplift mean image: max rel diff to Captum {_rel(o, r):.1e}; summation-to-delta error "
                     f"ours {gm[0]:.1e}, Captum {gm[1]:.1e}")
    if "gradcam_block" in args.only:
        from captum.attr import LayerAttribution, LayerGradCam

        from neuroxai.attribution.cam import conv_layers

        blk = conv_layers(model)[1]  # the second block's convolution
        blk_mod = dict(model.named_modules())[blk]
        o = run(f"gradcam layer {blk}", "neuroxai", lambda: attribute(model, x, t, "gradcam", layer=blk))
        run(f"gradcam layer {blk}", "Captum LayerGradCam",
            lambda: LayerAttribution.interpolate(LayerGradCam(model, blk_mod).attribute(
                x, target=t, relu_attributions=True), x.shape[2:], "trilinear"), o, lambda r: r)
    if "input_x_gradient" in args.only:
        o = run("input_x_gradient", "neuroxai", lambda: attribute(model, x, t, "input_x_gradient"))
        run("input_x_gradient", "Captum InputXGradient", lambda: InputXGradient(model).attribute(x, target=t),
            o, lambda r: r)
    if "guided_backprop" in args.only:
        o = run("guided_backprop", "neuroxai", lambda: attribute(model, x, t, "guided_backprop"))
        run("guided_backprop", "Captum GuidedBackprop", lambda: GuidedBackprop(model).attribute(x, target=t),
            o, lambda r: r)
    if "guided_gradcam" in args.only:
        o = run("guided_gradcam", "neuroxai", lambda: attribute(model, x, t, "guided_gradcam", layer=layer))
        run("guided_gradcam", "Captum GuidedGradCam",
            lambda: GuidedGradCam(model, layer_mod).attribute(x, target=t, interpolate_mode="nearest"),
            o, lambda r: r)
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except Exception as e:  # not a dependency (it needs ttach and torchvision.transforms)
        pgc, missing = None, f"{type(e).__name__}: {e}"
    for name, cls in [("hirescam", "HiResCAM"), ("layercam", "LayerCAM"), ("eigencam", "EigenCAM")]:
        if name not in args.only:
            continue
        run(name, "neuroxai", lambda name=name: attribute(model, x, t, name, layer=layer))
        if pgc is None:
            notes.append(f"{name}: pytorch-grad-cam not importable ({missing})")
            continue
        targets = [ClassifierOutputTarget(int(c)) for c in t]

        def peer(cls=cls):
            with getattr(pgc, cls)(model=model, target_layers=[layer_mod]) as cam:
                return torch.from_numpy(cam(input_tensor=x, targets=targets))

        # its maps are min-max rescaled and spline-zoomed to the input grid: no diff column
        run(name, f"pytorch-grad-cam {cls}", peer)
    lrps = [m.split(":", 1)[1] for m in args.only if m.startswith("lrp:")]
    if lrps:
        from zennit.attribution import Gradient
        from zennit.canonizers import SequentialMergeBatchNorm
        from zennit.composites import (EpsilonAlpha2Beta1, EpsilonAlpha2Beta1Flat, ExcitationBackprop,
                                       LayerMapComposite, layer_map_base)
        from zennit.rules import Epsilon, Gamma
        from zennit.types import Convolution

        zc = {"excitation_backprop": ExcitationBackprop, "epsilon_alpha2_beta1": EpsilonAlpha2Beta1,
              "epsilon_alpha2_beta1_flat": EpsilonAlpha2Beta1Flat,
              # the study's EpsilonGamma (its Zennit fork), built from Zennit 0.5.1's rules
              "epsilon_gamma": lambda canonizers: LayerMapComposite(
                  layer_map_base() + [(Convolution, Gamma(0.25)), (torch.nn.Linear, Epsilon())],
                  canonizers=canonizers)}
        onehot = torch.nn.functional.one_hot(t, model(x[:1]).shape[1]).to(x.dtype)
        for comp in lrps:
            o = run(f"lrp {comp}", "neuroxai",
                    lambda comp=comp: attribute(model, x, t, "lrp", composite=comp, start="one_hot"))

            def zennit(comp=comp):
                with Gradient(model, zc[comp](canonizers=[SequentialMergeBatchNorm()])) as attributor:
                    return attributor(x, onehot)[1]

            run(f"lrp {comp}", f"Zennit {comp}", zennit, o, lambda r: r)
    return notes


#: method row → the floor of its own model (the LRP-through-DenseNet/ResNet rows)
_OWN_FLOOR: dict = {}


def _study_models(args, best, rows, paired) -> list[str]:
    """LRP (EpsilonPlusFlat) through the study's architectures, each against its own floor (one
    forward + backward of that model) and beside Zennit with a canonizer of the same construction
    (``tests/attribution/test_lrp_study.py``): MONAI ``DenseNet121`` (its BatchNorms merged, the
    concatenations passing relevance on) and a torchvision-style 3-D ResNet (basic blocks, the
    residual sum split by Zennit's ``Sum`` layer)."""
    todo = [m for m in ("lrp_densenet", "lrp_resnet") if m in args.only]
    if not todo:
        return []
    from zennit.composites import EpsilonPlusFlat

    from neuroxai.attribution import attribute
    from tests.attribution._models import monai_densenet, torchvision_resnet
    from tests.attribution.test_lrp_study import ExactMergeBatchNorm, _zennit_resnet_canonizer, zennit_lrp

    notes = []
    dev = torch.device(args.device)
    for name in todo:
        if name == "lrp_densenet":
            model, label = monai_densenet(full=not args.quick).to(dev), "DenseNet (toy)" if args.quick else "DenseNet121"
            canon = [ExactMergeBatchNorm()]
        else:
            model, label = torchvision_resnet("basic", hara=True).to(dev), "torchvision-style ResNet"
            canon = _zennit_resnet_canonizer()
        x = torch.randn(args.batch, 1, *args.shape, generator=torch.Generator().manual_seed(0)).to(dev)
        t = torch.tensor([1, 0] * (args.batch // 2) + [1] * (args.batch % 2), device=dev)

        def plain(model=model, x=x, t=t):
            xi = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(model(xi).gather(1, t.view(-1, 1)).sum(), xi)
            return g

        meth = f"lrp epsilon_plus_flat {label}"
        impls = [("neuroxai", lambda model=model, x=x, t=t: attribute(model, x, t, "lrp", composite="epsilon_plus_flat")),
                 (f"Zennit EpsilonPlusFlat + canonizer",
                  lambda model=model, x=x, t=t, canon=canon: zennit_lrp(model, x, t, EpsilonPlusFlat(canonizers=canon)))]
        outs = {}
        for impl, fn in impls:
            paired[(meth, impl)], sec, out = _paired(best, fn, plain, args.repeats)
            outs[impl] = out
            rows.append((meth, impl, sec, None if impl == "neuroxai" else _rel(outs["neuroxai"], out)))
        f, _ = best(plain, args.repeats)
        _OWN_FLOOR[meth] = f
        notes.append(f"{meth}: its own floor {f:.3g} s")
    return notes


if __name__ == "__main__":
    raise SystemExit(main())
