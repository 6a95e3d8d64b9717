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
Each method runs back to back with a reference pass, ``--repeats`` pairs: times print as best
(median, range), ratios as the ratio of the best times with the range over the pairs.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from _timing import alternate, measure, ratio

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
    from napari_xaimed.models.device import pick_device
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
    reference = measure(forward_backward, args.repeats)
    forward_s = measure(forward, args.repeats)
    print(f"SwinUNETR {args.size}^3: forward {forward_s.text(digits=2)}, forward+backward "
          f"{reference.text(digits=2)}\n")
    runs = {
        "attention_rollout": lambda: attention_map(net, volume, "attention_rollout",
                                                   region=region, device=device),
        "attention_gradcam": lambda: attention_map(net, volume, "attention_gradcam",
                                                   region=region, device=device),
        "gradcam (Captum, attribute)": lambda: attribute(net, volume, "gradcam", region=region,
                                                         device=device),
    }
    print(f"{'method':<32}{'seconds (median, range)':>32}{'/ fwd+bwd (range)':>22}"
          f"  target <= {TARGET}x")
    print("-" * 100)
    worst = 0.0
    for label, run in runs.items():
        seconds, paired_reference = alternate(run, forward_backward, args.repeats)
        over = ratio(seconds, paired_reference)
        worst = max(worst, over.value)
        text = f"{seconds.best:.2f} s ({seconds.spread(2, median=True)})"
        print(f"{label:<32}{text:>32}{over.text():>22}  "
              f"{'ok' if over.value <= TARGET else 'SLOWER'}")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
