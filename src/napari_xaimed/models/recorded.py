"""The model of an output being rerun: loaded again as it was recorded, and only if unchanged.

A provenance record keeps the model's source, the SHA-256 of its weights and of its config
(the architecture and preprocessing: the same weights in another network are another model),
and whether loading it ran code the file names (``trusted``). A rerun refuses a changed
model, and runs a file's code again only when it is given ``trust`` again: a record of a
trusted load is no leave to run that file's code, which may have been edited since.
"""

from __future__ import annotations

from typing import Any

from napari_xaimed._core.errors import XaimedError


def recorded_model(record: dict[str, Any] | None, trust: bool = False,
                   source: Any = None) -> Any:
    """The :class:`~napari_xaimed.attribution.LoadedModel` a provenance record names.

    Parameters
    ----------
    record : dict or None
        The record's ``model`` (``LoadedModel.provenance()``); None or empty for records
        that kept only the model's path (``source``).
    trust : bool
        Run the code the model file names (``--trust``).
    source : str, optional
        The model's path or name when the record has none.

    Raises
    ------
    XaimedError
        If the weights or the config changed (found before anything is built from them), or
        the record says its model ran the file's code and ``trust`` is not given.
    """
    from napari_xaimed.models.loading import load_model

    source, kwargs = recorded_load_args(record, trust, source)
    return load_model(source, **kwargs)


def recorded_load_args(record: dict[str, Any] | None, trust: bool = False,
                       source: Any = None) -> tuple[Any, dict[str, Any]]:
    """The arguments of the :func:`~napari_xaimed.attribution.load_model` call that
    :func:`recorded_model` makes: ``(source, {"trust": ..., "expect": {hashes}})``, after its
    checks (a named source; ``trust`` given again for a record of a trusted load)."""
    record = record or {}
    source = record.get("source") or source
    if source is None:
        raise XaimedError("the provenance does not name its model: compute the output again "
                          "with this version.")
    if record.get("trusted") and not trust:
        raise XaimedError(
            f"this output was computed with {source!r}, whose config names code that ran "
            "because it was trusted: a rerun runs that code again only if you trust the file "
            "again; pass --trust (rerun(..., trust=True)).")
    # the recorded hashes are checked as the files are read, before anything is built
    return source, {"trust": trust, "expect": {"sha256": record.get("sha256"),
                                               "config_sha256": record.get("config_sha256")}}
