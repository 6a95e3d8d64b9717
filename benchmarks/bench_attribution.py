"""Benchmark: our attribution against Captum used directly, MONAI's occlusion, and the floor.

Run ``python benchmarks/bench_attribution.py`` (64^3 and 96^3) or with ``--quick`` (64^3 only);
``--device cuda`` on a GPU machine (default: auto).

Network: the bundled classifier's architecture (``LesionNet``: three 3D convolutions, global
max-pool, linear; fully convolutional, so it takes any size), seeded random weights, input a
lesion sample volume at the benchmark size, target class 1.

For each method: ours (``attribute``: probe pass, preprocessing, the method, map back), Captum
called directly with the same settings, and the *floor*: the number of passes the method needs
times one pass (forward + backward for gradient methods, forward for occlusion), a pass timed
at the model's best throughput over batch sizes 1, 4 and 16 (as the field notes define it).
Target: ours at most 1.2x the floor. Occlusion (window 8^3 stride 8, and 16^3 stride 8)
also runs MONAI's ``OcclusionSensitivity`` (mask size equal to our window, overlap giving the
same stride, constant 0 fill, no activation, the same batch); target: ours at least 5x faster.

Methods: saliency, Integrated Gradients (32 steps), SmoothGrad (16 samples), GradientSHAP (16
samples, zero baseline; Captum's ``GradientShap`` has no batch size and runs all samples in one
pass, ours runs them ``BATCH`` at a time), Grad-CAM (last Conv3d), occlusion. Ours and Captum
run back to back, 3 pairs (occlusion: 1); each time is printed as its best, median and range,
each ratio as the ratio of the best times with the range over the pairs. ``--methods`` runs only
some of them, ``--size`` one size of your choice.

A method that ``attribute`` refuses (an ``XaimedError``: with these random weights Grad-CAM's
last layer may hold no positive evidence for the target, a map of zeros, which ``attribute``
refuses with the reason) is a row of the table with the reason, and the benchmark goes on.

The CAM family (Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, Score-CAM, Ablation-CAM, Eigen-CAM)
runs at ``--cam-size`` (default 128^3) against its floor only: Captum has none of them, and
pytorch-grad-cam's 3D support is Grad-CAM alone. Passes: the gradient variants one forward +
backward; Eigen-CAM one forward; Score-CAM and Ablation-CAM one forward plus one per channel of
the layer (the last convolution's 32: 33 forwards), ``BATCH`` per call. The network is the
bundled classifier with its trained weights. The gradient variants' floor counts a backward
pass to the input, with weight gradients; theirs stops at the layer and computes none, so they
can run below it. ``--cams-only`` skips the other rows.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F
from _timing import alternate, best, measure, ratio

from napari_xaimed import XaimedError
from napari_xaimed.attribution import attribute
from napari_xaimed.attribution.cams import CAMS, GRADIENT_CAMS
from napari_xaimed.models.device import pick_device
from napari_xaimed.models.lesion_classifier import WEIGHTS, LesionNet
from napari_xaimed.samples import lesion_volume

FLOOR_TARGET = 1.2
MONAI_TARGET = 5.0
TARGET = 1
BATCH = 16


def pass_times(model, x, score=None, batches=(1, 4, 16), repeats: int = 3
               ) -> tuple[float, float]:
    """Seconds per volume of a forward, and of a forward + backward of ``score(output)``
    (default: the target class's score), at the best throughput over ``batches`` (best of
    ``repeats`` each)."""
    score = score or (lambda out: out[:, TARGET].sum())
    forward_s, backward_s = [], []
    for n in batches:
        batch = x.repeat(n, 1, 1, 1, 1)

        def forward(batch=batch):
            with torch.no_grad():
                model(batch)

        def forward_backward(batch=batch):
            xg = batch.clone().requires_grad_(True)
            score(model(xg)).backward()

        best(forward, 1)  # warm-up
        forward_s.append(best(forward, repeats) / n)
        backward_s.append(best(forward_backward, repeats) / n)
    return min(forward_s), min(backward_s)


def captum_run(method, model, x, params):
    import captum.attr as ca

    xg = x.clone().requires_grad_(True)
    if method == "saliency":
        return ca.Saliency(model).attribute(xg, target=TARGET, abs=True)
    if method == "integrated_gradients":
        return ca.IntegratedGradients(model).attribute(
            xg, baselines=torch.zeros_like(x), target=TARGET, n_steps=params["steps"],
            internal_batch_size=BATCH)
    if method == "smoothgrad":
        return ca.NoiseTunnel(ca.Saliency(model)).attribute(
            xg, nt_type="smoothgrad", nt_samples=params["samples"], nt_samples_batch_size=BATCH,
            stdevs=0.1 * float(x.max() - x.min()), target=TARGET, abs=True)
    if method == "gradient_shap":
        return ca.GradientShap(model).attribute(
            xg, baselines=torch.zeros_like(x), n_samples=params["samples"],
            stdevs=0.1 * float(x.max() - x.min()), target=TARGET)
    if method == "gradcam":
        layer = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)][-1]
        cam = ca.LayerGradCam(model, layer).attribute(xg, target=TARGET, relu_attributions=True)
        return F.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False)
    if method == "occlusion":
        w, s = params["window"], params["stride"]
        with torch.no_grad():
            return ca.Occlusion(model).attribute(
                x, sliding_window_shapes=(1, w, w, w), strides=(1, s, s, s), baselines=0.0,
                target=TARGET, perturbations_per_eval=BATCH)
    raise AssertionError(method)


def monai_occlusion(model, x, window, stride):
    from monai.visualize import OcclusionSensitivity

    occ = OcclusionSensitivity(model, mask_size=window, n_batch=BATCH, verbose=False, mode=0.0,
                               overlap=1.0 - stride / window, activate=False)
    with torch.no_grad():
        return occ(x)


def passes(method, params, shape) -> tuple[int, str]:
    if method in ("saliency", "gradcam"):
        return 1, "fb"
    if method == "integrated_gradients":
        return params["steps"], "fb"
    if method in ("smoothgrad", "gradient_shap"):
        return params["samples"], "fb"
    w, s = params["window"], params["stride"]
    return math.prod(math.ceil((n - w) / s) + 1 for n in shape) + 1, "f"


CASES = [
    ("saliency", {}),
    ("integrated_gradients", {"steps": 32}),
    ("smoothgrad", {"samples": 16}),
    ("gradient_shap", {"samples": 16}),
    ("gradcam", {}),
    ("occlusion", {"window": 8, "stride": 8}),
    ("occlusion", {"window": 16, "stride": 8}),
]


def cam_passes(method: str, channels: int) -> tuple[int, str]:
    if method in GRADIENT_CAMS:
        return 1, "fb"
    return (1, "f") if method == "eigencam" else (1 + channels, "f")


def run_cams(size: int, device: torch.device, rows: list,
             methods: list[str] | None = None) -> None:
    """Each CAM variant at ``size``^3 against its floor; the passes it recorded are checked
    against the count the floor assumes. The bundled classifier's trained weights (on the
    full-size volume, no resizing): with random ones Ablation-CAM's weights can all be
    negative, and its map is refused as zeros."""
    model = LesionNet().eval()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    model = model.to(device)
    sample = lesion_volume(shape=(size,) * 3, spacing=(64 / size,) * 3, n_lesions=2, seed=1)
    volume = sample.image
    x = torch.from_numpy(volume)[None, None].to(device)
    t_f, t_fb = pass_times(model, x)

    def single() -> None:
        with torch.no_grad():
            model(x)

    # a map from one pass cannot batch: the forward of one volume alone, for comparison
    t_single = best(single, 3)
    channels = model.features[-2].out_channels
    print(f"\nCAM family, {size}^3 on {device}: one forward {1000 * t_f:.1f} ms, "
          f"forward+backward {1000 * t_fb:.1f} ms (best batch), one volume's forward alone "
          f"{1000 * t_single:.1f} ms, layer of {channels} channels", flush=True)
    for method in CAMS:
        if methods and method not in methods:
            continue
        n, kind = cam_passes(method, channels)
        floor = n * (t_fb if kind == "fb" else t_f)
        results: list = []
        ours = measure(lambda m=method, kept=results: kept.append(attribute(
            model, volume, m, target=TARGET, device=str(device), batch_size=BATCH)), 3)
        assert results[-1].params["passes"]["forward"] == n, results[-1].params["passes"]
        rows.append((size, method, ours, None, floor, n, None, ""))
        alone = f", {ours.best / t_single:.2f}x one volume's forward" if n == 1 else ""
        print(f"  {method}: ours {ours}, floor {floor:.3f} s ({n} "
              f"{'forward+backward' if kind == 'fb' else 'forward'} passes) -> "
              f"{ratio(ours, floor)} floor{alone}", flush=True)


def run_size(size: int, device: torch.device, rows: list,
             methods: list[str] | None = None) -> None:
    torch.manual_seed(0)
    model = LesionNet().eval().to(device)
    sample = lesion_volume(shape=(size,) * 3, spacing=(64 / size,) * 3, n_lesions=2, seed=1)
    volume = sample.image
    x = torch.from_numpy(volume)[None, None].to(device)
    t_f, t_fb = pass_times(model, x)
    print(f"\n{size}^3 on {device}: one forward {1000 * t_f:.1f} ms, forward+backward "
          f"{1000 * t_fb:.1f} ms", flush=True)
    for method, params in CASES:
        if methods and method not in methods:
            continue
        repeats = 1 if method == "occlusion" else 3
        n, kind = passes(method, params, x.shape[2:])
        floor = n * (t_fb if kind == "fb" else t_f)
        label = method if not params else f"{method} {params}"

        def ours_run(m=method, p=params):
            return attribute(model, volume, m, target=TARGET, device=str(device),
                             batch_size=BATCH, **p)

        def captum(m=method, p=params):
            return captum_run(m, model, x, p)

        refused = ""
        try:
            ours, theirs = alternate(ours_run, captum, repeats)
        except XaimedError as exc:  # a refusal is a result: a row with the reason
            refused, ours = str(exc), None
            theirs = measure(captum, repeats)
        monai = None
        if method == "occlusion":
            monai = measure(lambda p=params: monai_occlusion(model, x, p["window"],
                                                             p["stride"]), 1)
        rows.append((size, label, ours, theirs, floor, n, monai, refused))
        if ours is None:
            print(f"  {label}: ours refused ({refused}); Captum {theirs}", flush=True)
            continue
        extra = ("" if monai is None else
                 f", MONAI {monai} ({ratio(monai, ours)} ours)")
        print(f"  {label}: ours {ours}, Captum {theirs}, floor {floor:.3f} s ({n} passes) -> "
              f"{ratio(ours, floor)} floor{extra}", flush=True)


def print_table(rows: list) -> None:
    """One row per case: ours (best, median, range), Captum, the floor and MONAI, each ratio
    with its range over the repeats; a refused method with its reason."""
    print()
    print(f"{'case':<44}{'ours (median, range)':>32}{'Captum':>11}{'Captum/ours':>20}"
          f"{'floor':>11}{'ours/floor':>20}{'MONAI/ours':>18}  met")
    print("-" * 162)
    for size, label, ours, theirs, floor, _n, monai, refused in rows:
        case = f"{size}^3 {label}"
        if ours is None:
            print(f"{case:<44}{'refused':>32}{theirs.best:>9.3f} s{'-':>20}{floor:>9.3f} s"
                  f"{'-':>20}{'-':>18}  -")
            print(f"{'':<6}{refused}")
            continue
        to_floor = ratio(ours, floor)
        ok = to_floor.value <= FLOOR_TARGET
        monai_text = "-"
        if monai is not None:
            faster = ratio(monai, ours)
            ok = ok and faster.value >= MONAI_TARGET
            monai_text = faster.text(1)
        ours_text = (f"{ours.best:.3f} s ({ours.spread(3, median=True)})"
                     if len(ours.seconds) > 1 else f"{ours.best:.3f} s")
        theirs_text = "-" if theirs is None else f"{theirs.best:.3f} s"
        vs_theirs = "-" if theirs is None else ratio(theirs, ours).text()
        print(f"{case:<44}{ours_text:>32}{theirs_text:>11}{vs_theirs:>20}"
              f"{floor:>9.3f} s{to_floor.text():>20}{monai_text:>18}  {'yes' if ok else 'NO'}")
    print(f"targets: ours <= {FLOOR_TARGET}x the floor (passes x one pass at the best batch "
          f"size); occlusion >= {MONAI_TARGET}x faster than MONAI's OcclusionSensitivity.\n"
          "Ratios: of the best times (range over the back-to-back pairs of repeats).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64^3 only")
    parser.add_argument("--size", type=int, help="this size only (edge in voxels)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        help="only these methods (default: all)")
    parser.add_argument("--cam-size", type=int, default=128,
                        help="volume size of the CAM family's rows (default 128)")
    parser.add_argument("--cams-only", action="store_true", help="only the CAM family's rows")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    import captum
    import monai

    print(f"torch {torch.__version__}, captum {captum.__version__}, monai {monai.__version__}, "
          f"{torch.get_num_threads()} threads, batch {BATCH}")
    rows: list = []
    if not args.cams_only:
        for size in ([args.size] if args.size else [64] if args.quick else [64, 96]):
            run_size(size, device, rows, args.methods)
    run_cams(args.cam_size, device, rows, args.methods)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
