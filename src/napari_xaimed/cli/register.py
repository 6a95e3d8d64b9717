"""``napari-xaimed register``: the files' geometry as registration needs it, and what the
provenance records of them.

Registration places each image by its spacing and origin along its own voxel axes (napari
``scale`` and ``translate``), as :func:`~napari_xaimed.registration.register` and the
registration widget do; for two files that is the world only when their voxel axes point the
same way, so a moving image whose axes are flipped or permuted against the fixed one's is
turned to follow them (no interpolation), and an oblique rotation between them is refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_xaimed._core.provenance import cli_inputs


def registration_geometry(args: argparse.Namespace, fixed: Any, moving: Any
                           ) -> tuple[Any, Any, dict[str, Any]]:
    """The moving image on axes parallel to the fixed one's (flips and permutations undone),
    the orientation transform applied (or None), and the label maps, each checked to lie on
    its image's grid (the moving labels turned as the moving image)."""
    from napari_xaimed.io import read_volume
    from napari_xaimed.io.grid import check_same_grid, orient_for_registration, reorient

    oriented, ornt = orient_for_registration(
        moving, fixed, (f"the moving image {Path(args.moving).name}",
                        f"the fixed image {Path(args.fixed).name}"))
    labels: dict[str, Any] = {}
    for key, image, path in (("fixed_labels", fixed, args.fixed),
                             ("moving_labels", moving, args.moving)):
        if getattr(args, key) is None:
            labels[key] = None
            continue
        volume = read_volume(getattr(args, key), lazy=args.lazy)
        check_same_grid(image, volume, (f"the {key.split('_')[0]} image {Path(path).name}",
                                        f"its labels {Path(getattr(args, key)).name}"))
        labels[key] = (volume.data if key == "fixed_labels" or ornt is None
                       else reorient(volume.data, volume.spacing, ornt)[0])
    return oriented, ornt, labels


def registration_inputs(args: argparse.Namespace, fixed: Any, read_moving: Any,
                         moving: Any, ornt: Any) -> dict[str, Any]:
    """The recorded inputs: the files as read, and for a moving image whose axes were turned,
    the turn and the spacing and origin registered (so a rerun turns it again)."""
    inputs = cli_inputs(fixed=(args.fixed, fixed), moving=(args.moving, read_moving))
    if ornt is not None:
        inputs["moving"].update(orientation=ornt.tolist(), spacing=list(moving.spacing),
                                origin=list(moving.translate))
    return inputs
