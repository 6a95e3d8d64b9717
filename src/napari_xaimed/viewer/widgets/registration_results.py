"""What a registration shows: its output layers on the fixed grid and the quality table's rows.

The outputs land as ``"<what> [moving->fixed]"`` layers: the warped image, the displacement as
vectors, the Jacobian determinant centred on 1, the folded voxels and a warped grid. For a lazy
registration the warped image is at full resolution and the field's layers lie on the coarse
grid, with its scale and translate, so they overlay in world coordinates.
"""

from __future__ import annotations

from typing import Any

from napari_xaimed._core.provenance import provenance
from napari_xaimed.registration import RegistrationResult
from napari_xaimed.registration.lazy import LazyRegistration
from napari_xaimed.viewer.layers import (
    LayerTuple,
    heatmap_layer,
    image_layer,
    labels_layer,
    output_name,
    vectors_layer,
)


def quality_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The quality figures as a before/after table."""
    rows = []
    for name, key in (("NCC", "ncc"), ("mutual information", "mi"),
                      ("TRE mean (mm)", "tre_{}_mean_mm"), ("TRE max (mm)", "tre_{}_max_mm")):
        before = metrics.get(f"{key}_before" if "{}" not in key else key.format("before"))
        after = metrics.get(f"{key}_after" if "{}" not in key else key.format("after"))
        if before is not None:
            rows.append({"figure": name, "before": before, "after": after})
    for label, before in metrics.get("dice_before", {}).items():
        rows.append({"figure": f"Dice label {label}", "before": before,
                     "after": metrics["dice_after"][label]})
    for name, key in (("folded voxels (%)", "folded_percent"), ("Jacobian min", "jacobian_min"),
                      ("Jacobian max", "jacobian_max"), ("Jacobian std", "jacobian_std")):
        rows.append({"figure": name, "before": "", "after": metrics[key]})
    return rows


def registration_provenance(result: RegistrationResult | LazyRegistration,
                            names: tuple[str, str], vector_step: int, grid_mm: float,
                            seconds: float, inputs: dict[str, Any] | None) -> dict[str, Any]:
    """The provenance every output layer of one registration shares."""
    lazy = result if isinstance(result, LazyRegistration) else None
    coarse = result if lazy is None else lazy.coarse
    extra = {} if lazy is None else {
        "lazy": {k: v for k, v in lazy.to_dict().items()
                 if k.startswith(("coarse_", "fixed_", "moving_", "warped_"))},
        "timings_lazy": lazy.timings}
    return provenance("registration", sources=list(names),
                      params={**coarse.params, "vector_step": vector_step, "grid_mm": grid_mm},
                      seconds=seconds, metrics=coarse.metrics, timings=coarse.timings,
                      inputs=inputs, **extra)


def registration_layers(result: RegistrationResult | LazyRegistration, names: tuple[str, str],
                        spacing: tuple[float, float, float],
                        translate: tuple[float, float, float], vector_step: int,
                        grid_mm: float, prov: dict[str, Any]) -> list[LayerTuple]:
    """The warped image first, then the field's layers (Jacobian, folded, grid, vectors),
    added hidden so fixed and warped show first."""
    lazy = result if isinstance(result, LazyRegistration) else None
    warped_at = (spacing, translate)
    if lazy is not None:  # the field's layers on the coarse grid they were computed on
        spacing, translate = lazy.coarse_spacing, lazy.coarse_origin
    field = result if lazy is None else lazy.coarse

    def geometry(output: str, at: tuple | None = None) -> dict[str, Any]:
        # which output: a rerun recomputes it; all but the warped image start hidden
        return {"translate": translate if at is None else at[1], "visible": at is not None,
                "provenance": {**prov, "output": output}}

    vectors, lengths = field.vectors(step=vector_step)
    return [
        image_layer(field.warped if lazy is None else lazy.warped,
                    output_name("Warped", *names), warped_at[0],
                    **geometry("warped", warped_at)),
        heatmap_layer(field.jacobian, output_name("Jacobian", *names), spacing,
                      signed=True, centre=1.0, **geometry("jacobian"),
                      values="Jacobian determinant (1: volume kept, <1 shrinks, <=0 folds)"),
        labels_layer(field.folded, output_name("Folded", *names), spacing,
                     **geometry("folded")),
        image_layer(field.grid(grid_mm), output_name("Warped grid", *names), spacing,
                    colormap="cyan", blending="additive", contrast_limits=(0, 1),
                    opacity=0.5, **geometry("grid")),
        vectors_layer(vectors, lengths, output_name("Displacement", *names), spacing,
                      **geometry("displacement vectors")),
    ]


def error_layer(error: Any, names: tuple[str, str], spacing: tuple[float, float, float],
                translate: tuple[float, float, float], prov: dict[str, Any]) -> LayerTuple:
    """``|u - u_true|`` against the sample's known field, hidden like the field's layers."""
    return heatmap_layer(error, output_name("Error vs known field", *names), spacing,
                         signed=False, translate=translate, visible=False,
                         values="|u - u_true|, mm (registration error)",
                         provenance=provenance("registration error", sources=list(names),
                                               params={"truth": "the sample's displacement"},
                                               registration=prov))
