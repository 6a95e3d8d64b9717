"""What the commands share: output file names and the --trust help."""

from __future__ import annotations

import re


def layer_file_stem(name: str) -> str:
    """A layer name as the stem of the file it is written to: lower case, each run of other
    characters one ``_`` (``"Segmentation [lesion ct]"`` -> ``"segmentation_lesion_ct"``).

    Not :func:`napari_xaimed.io.cases.case_file_stem`, which keeps a case id's case and
    characters so that distinct ids stay distinct files.
    """
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "layer"


#: help of ``--trust``, on every command that loads a model
TRUST_HELP = ("run the code the model file names (a 'module:Class' network, a bundle's $ "
              "expressions or _target_ outside monai.networks.nets): only for files you trust; "
              "without it such a file is refused before any of it runs")
