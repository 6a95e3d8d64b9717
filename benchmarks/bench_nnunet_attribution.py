"""The CAM family and Integrated Gradients on an nnU-Net network against the floor.

Issue 30's benchmark row: each method explains a segmentation target (the summed logit of
class 1 inside the sample's lesion mask) of nnU-Net's ``PlainConvUNet`` on one 128^3 volume,
and its time is compared with its floor, the passes it needs x one pass:

- Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM: one forward + backward;
- Eigen-CAM: one forward;
- Score-CAM, Ablation-CAM: one forward + one per channel of the layer (``passes`` in the
  result's provenance says how many ran);
- Integrated Gradients, 32 steps: 32 forward + backward.

One pass is the best of a forward (and a forward + backward) of the same network on the same
volume at batch 1 and 2. The network is a plain ``PlainConvUNet`` as nnU-Net's plans build it
for 3d_fullres (instance norm, leaky ReLU, stride-2 stages), narrowed to ``--features`` so
that 128^3 runs on a CPU; seeded random weights (the time does not depend on them). Through a
result folder (``load_model(folder)``) nnU-Net's mirrored sliding windows run the network many
times per volume and the CAMs are refused (one feature map per window); this row is the
network alone, as its maps are made on one window.

    python benchmarks/bench_nnunet_attribution.py [--size 128] [--repeats 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import measure, ratio
from bench_attribution import pass_times

from napari_xaimed import XaimedError
from napari_xaimed.attribution import METHODS, attribute
from napari_xaimed.samples import lesion_volume

GRADIENT_CAMS = ("gradcam", "gradcam_pp", "xgradcam", "hirescam", "layercam")
FORWARD_CAMS = ("scorecam", "ablationcam", "eigencam")
CHANNEL = 1


def plain_conv_unet(features: tuple[int, ...]) -> torch.nn.Module:
    """nnU-Net's 3d_fullres network as its plans build it, with ``features`` per stage."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(0)
    n = len(features)
    return PlainConvUNet(
        input_channels=1, n_stages=n, features_per_stage=list(features),
        conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * n,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1), n_conv_per_stage=[2] * n,
        num_classes=2, n_conv_per_stage_decoder=[2] * (n - 1), conv_bias=True,
        norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=False).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="volume edge in voxels")
    parser.add_argument("--features", type=int, nargs="+", default=[8, 16, 32, 64],
                        help="features per stage (default 8 16 32 64)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args(argv)

    net = plain_conv_unet(tuple(args.features))
    sample = lesion_volume(shape=(args.size,) * 3, spacing=(64 / args.size,) * 3, n_lesions=2,
                           seed=1)
    volume, region = sample.image, sample.lesions > 0
    x = torch.from_numpy(volume)[None, None]
    region_t = torch.from_numpy(region.astype(np.float32))
    # the region score's forward + backward, at batch 1 and 2 (a 128^3 UNet batch of 16 does
    # not fit a CPU's memory comfortably)
    t_f, t_fb = pass_times(net, x, lambda out: (out[:, CHANNEL] * region_t).sum(),
                           batches=(1, 2), repeats=2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; PlainConvUNet "
          f"features {args.features}, {args.size}^3: one forward {t_f:.3f} s, forward + "
          f"backward {t_fb:.3f} s per volume", flush=True)

    rows = []
    methods = [*GRADIENT_CAMS, *FORWARD_CAMS, "integrated_gradients"]
    for method in methods:
        if method not in METHODS:
            rows.append((method, None, None, None, "not in METHODS"))
            continue
        params = {"steps": args.steps} if method == "integrated_gradients" else {}
        kept: list = []
        try:
            timing = measure(lambda m=method, p=params, kept=kept: kept.append(attribute(
                net, volume, m, target=CHANNEL, region=region, device="cpu",
                batch_size=args.batch, **p)), args.repeats)
        except XaimedError as exc:  # a refusal is a row with its reason
            rows.append((method, None, None, None, str(exc)))
            print(f"  {method}: refused ({exc})", flush=True)
            continue
        passes = kept[-1].params.get("passes", {})
        if method == "integrated_gradients":
            n, kind = args.steps, "fb"
        elif method in GRADIENT_CAMS:
            n, kind = 1, "fb"
        else:
            n, kind = int(passes.get("forward", 1)), "f"
        floor = n * (t_fb if kind == "fb" else t_f)
        rows.append((method, timing, floor, n, ""))
        print(f"  {method}: ours {timing}, floor {floor:.3f} s ({n} "
              f"{'forward+backward' if kind == 'fb' else 'forward'} passes) -> "
              f"{ratio(timing, floor)}", flush=True)

    print()
    print(f"{'method':<24}{'ours (best)':>12}{'floor':>10}{'passes':>8}{'ours/floor':>22}")
    print("-" * 76)
    for method, timing, floor, n, refused in rows:
        if timing is None:
            print(f"{method:<24}{'refused':>12}  {refused}")
            continue
        print(f"{method:<24}{timing.best:>10.3f} s{floor:>8.3f} s{n:>8}"
              f"{ratio(timing, floor).text():>22}")
    print("ours/floor: the best time over the floor (range over the repeats); below 1 where "
          "a method needs less than its floor assumes (a CAM's backward stops at its layer).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
