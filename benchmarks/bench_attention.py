"""Benchmark: attention explanations of SwinUNETR against one forward + backward pass.

Run ``python benchmarks/bench_attention.py`` (SwinUNETR at 96^3, best of 2) or with
``--size 64`` / ``--repeats 3`` / ``--device cuda``.

Network: MONAI ``SwinUNETR(in_channels=1, out_channels=2)`` with its defaults (feature size 24,
depths 2-2-2-2, window 7, instance norm), seeded random weights; input a lesion sample volume at
the benchmark size; target channel 1 inside the sample's lesion mask (the region).

Reference pass: one forward + backward of the model on the volume (the summed logit of channel 1
in the region, ``backward()`` into the weights, as training would), best of the repeats. Rows:
``attention_rollout`` and ``attention_gradcam`` (``attention_map``: forward with the hooks, for
the gradient-weighted one a backward pass to the first block's attention, the readout through
all eight blocks, the map back onto the volume), and Captum-based ``gradcam`` through
``attribute`` for comparison (its default layer). Target: each at most 1.5x the reference pass.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from _timing import best

TARGET = 1.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="volume edge (multiple of 32)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    import monai
    from monai.networks.nets import SwinUNETR

    from napari_xaimed.attribution import attention_map, attribute
    from napari_xaimed.attribution.device import pick_device
    from napari_xaimed.samples import lesion_volume

    device = pick_device(args.device)
    torch.manual_seed(0)
    net = SwinUNETR(in_channels=1, out_channels=2).to(device).eval()
    sample = lesion_volume((args.size,) * 3, n_lesions=1, lesion_radius_mm=(4.0, 6.0), seed=0)
    volume, region = sample.image.astype(np.float32), sample.lesions > 0
    x = torch.from_numpy(volume)[None, None].to(device)
    mask = torch.from_numpy(region).float().to(device)

    def forward_backward() -> None:
        out = net(x)
        (out[0, 1] * mask).sum().backward()
        net.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.no_grad():
            net(x)

    print(f"torch {torch.__version__}, monai {monai.__version__}, {torch.get_num_threads()} "
          f"threads, device {device}")
    reference = best(forward_backward, args.repeats)
    forward_s = best(forward, args.repeats)
    print(f"SwinUNETR {args.size}^3: forward {forward_s:.2f} s, forward+backward "
          f"{reference:.2f} s (best of {args.repeats})\n")
    runs = {
        "attention_rollout": lambda: attention_map(net, volume, "attention_rollout",
                                                   region=region, device=device),
        "attention_gradcam": lambda: attention_map(net, volume, "attention_gradcam",
                                                   region=region, device=device),
        "gradcam (Captum, attribute)": lambda: attribute(net, volume, "gradcam", region=region,
                                                         device=device),
    }
    print(f"{'method':<32}{'seconds':>9}{'/ fwd+bwd':>11}  target <= {TARGET}x")
    print("-" * 66)
    worst = 0.0
    for label, run in runs.items():
        seconds = best(run, args.repeats)
        ratio = seconds / reference
        worst = max(worst, ratio)
        print(f"{label:<32}{seconds:>8.2f}s{ratio:>10.2f}x  "
              f"{'ok' if ratio <= TARGET else 'SLOWER'}")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
