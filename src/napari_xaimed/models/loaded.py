"""The model a loader returns: the network, how volumes become its input, and where it came
from (:func:`~napari_xaimed.models.loading.load_model` and the nnU-Net loader both make one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from napari_xaimed.models.preprocess import Preprocessing


@dataclass
class LoadedModel:
    """A model ready to explain.

    Attributes
    ----------
    module : torch.nn.Module
        In eval mode.
    preprocessing : Preprocessing
        How volumes become its input (from its config; overridable per call).
    classes : list of str
        Output class names, when known.
    source : str
        Where it came from (a path, ``"bundled"`` or ``"module"``).
    sha256 : str or None
        Of the weights file, for provenance.
    config_sha256 : str or None
        Of the config the network was built from (the JSON beside the weights, the config
        passed in, or the bundle's config): the same weights in another architecture differ.
    trusted : bool
        Whether loading ran code the file names (it was loaded with ``trust=True``).
    training_inputs : dict or None
        The config's record of the training volumes (:mod:`~napari_xaimed.models.domain`):
        inputs far outside them are warned about.
    """

    module: torch.nn.Module
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    classes: list[str] = field(default_factory=list)
    source: str = "module"
    sha256: str | None = None
    config_sha256: str | None = None
    trusted: bool = False
    training_inputs: dict[str, Any] | None = None
    # (input shape, device) -> number of classes of a classifier already checked on such input
    checked: dict[tuple[Any, ...], int] = field(default_factory=dict, repr=False)
    # (input shape, device, layer asked for) -> the Grad-CAM layer chosen on such input
    cam_layers: dict[tuple[Any, ...], str] = field(default_factory=dict, repr=False)

    def provenance(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256,
                "config_sha256": self.config_sha256, "trusted": self.trusted,
                "classes": self.classes, "class": type(self.module).__name__}
