"""Names of label values, read from where segmentations keep them (no napari here).

Three sources, each giving ``{label value: name}`` (the background, 0, left out):

- a **sidecar** beside a NIfTI, NRRD or MetaImage label map: ``<stem>.labels.json``
  (``liver.nii.gz`` -> ``liver.labels.json``), one JSON object from label value to name::

      {"1": "liver", "2": "tumour"}

  (the value may also be ``{"name": "liver"}``, so a colour or other fields can ride along);
- a **DICOM-SEG**: each item of its SegmentSequence, SegmentNumber -> SegmentLabel (pydicom);
- **nnU-Net v2's ``dataset.json``**: its ``labels`` object (name -> value); region-based
  datasets (a list of values per name) name the value ``regions_class_order`` writes for each.

:func:`read_label_names` picks the source from the path; :func:`write_sidecar` writes a
sidecar (napari's writer does, for a Labels layer with names).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_xaimed._core.errors import XaimedError

SIDECAR_SUFFIX = ".labels.json"

_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def labels_sidecar_path(path: str | Path) -> Path:
    """``<stem>.labels.json`` beside a volume file (``a/ct.nii.gz`` -> ``a/ct.labels.json``)."""
    path = Path(path)
    name = path.name
    for suffix in _VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + SIDECAR_SUFFIX)


def _value(key: Any, where: str) -> int:
    try:
        value = int(str(key).strip())
    except ValueError:
        value = -1
    if value < 0 or str(value) != str(key).strip():
        raise XaimedError(f"{where}: {key!r} is not a label value; the keys are non-negative "
                          'integers, e.g. {"1": "liver", "2": "tumour"}.')
    return value


def parse_sidecar(content: Any, where: str = "label names") -> dict[int, str]:
    """``{"1": "liver"}`` or ``{"1": {"name": "liver"}}`` -> ``{1: "liver"}`` (0 left out).

    Raises
    ------
    XaimedError
        When ``content`` is not such an object.
    """
    if not isinstance(content, dict):
        raise XaimedError(f"{where}: expected a JSON object from label value to name, e.g. "
                          '{"1": "liver", "2": "tumour"}.')
    names = {}
    for key, entry in content.items():
        value = _value(key, where)
        name = entry.get("name") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name.strip():
            raise XaimedError(f"{where}: label {key} has no name ({entry!r}); give a string.")
        if value:
            names[value] = name.strip()
    return names


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise XaimedError(f"{path.name} is not valid JSON ({exc.msg}, line {exc.lineno}): "
                          "fix or remove it.") from exc


def sidecar_names(path: str | Path) -> dict[int, str]:
    """The names in the ``<stem>.labels.json`` beside ``path``; ``{}`` when there is none."""
    sidecar = labels_sidecar_path(path)
    if not sidecar.is_file():
        return {}
    return parse_sidecar(_load_json(sidecar), sidecar.name)


def write_sidecar(path: str | Path, names: dict[int, str]) -> Path:
    """Write ``names`` (label value -> name) to the ``<stem>.labels.json`` beside the volume
    file ``path``, as :func:`sidecar_names` reads it back; the background (0) left out.

    Raises
    ------
    XaimedError
        When a value is no non-negative integer or a name is empty.
    """
    content = {str(_value(v, "label names")): str(n).strip() for v, n in sorted(names.items())
               if int(v) != 0}
    parse_sidecar(content, "label names")  # the same checks as on reading
    sidecar = labels_sidecar_path(path)
    sidecar.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    return sidecar


def nnunet_label_names(dataset: str | Path | dict[str, Any]) -> dict[int, str]:
    """``dataset.json``'s ``labels`` (a file, its folder, or the parsed object) as
    ``{value: name}``; a region (a list of values) is named at the value
    ``regions_class_order`` gives it (nnU-Net writes region ``k`` as that value).

    Raises
    ------
    XaimedError
        When there is no ``labels`` object, or regions without ``regions_class_order``.
    """
    if not isinstance(dataset, dict):
        path = Path(dataset)
        path = path / "dataset.json" if path.is_dir() else path
        if not path.is_file():
            raise XaimedError(f"No dataset.json at {str(path)!r}: give nnU-Net's dataset.json "
                              "or the folder that holds it.")
        dataset = _load_json(path)
    labels = dataset.get("labels") if isinstance(dataset, dict) else None
    if not isinstance(labels, dict):
        raise XaimedError('dataset.json has no "labels" object (name -> value), as nnU-Net v2 '
                          'needs, e.g. {"background": 0, "liver": 1}.')
    plain = {name: v for name, v in labels.items() if not isinstance(v, list | tuple)}
    regions = [(name, v) for name, v in labels.items() if isinstance(v, list | tuple)]
    names = {_value(v, "dataset.json labels"): str(name) for name, v in plain.items()}
    if regions:
        order = dataset.get("regions_class_order")
        regions = [(n, v) for n, v in regions if list(v) != [0]]
        if not isinstance(order, list) or len(order) != len(regions):
            raise XaimedError("dataset.json has region labels (lists of values) but no "
                              "regions_class_order with one value per region, so the written "
                              "label values cannot be named.")
        names.update({int(value): str(name) for (name, _), value in zip(regions, order,
                                                                       strict=True)})
    names.pop(0, None)
    return names


def dicom_seg_names(path: str | Path) -> dict[int, str]:
    """SegmentNumber -> SegmentLabel of a DICOM-SEG's SegmentSequence (pydicom; pixels not
    read); a segment without a label is ``"segment <number>"``.

    Raises
    ------
    XaimedError
        When the file is not DICOM or has no SegmentSequence.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except (InvalidDicomError, OSError) as exc:
        raise XaimedError(f"{Path(path).name!r} could not be read as DICOM ({exc}).") from exc
    segments = getattr(ds, "SegmentSequence", None)
    if not segments:
        raise XaimedError(f"{Path(path).name!r} has no SegmentSequence: it is not a DICOM-SEG.")
    return {int(item.SegmentNumber): str(getattr(item, "SegmentLabel", "") or
                                         f"segment {int(item.SegmentNumber)}")
            for item in segments}


def read_label_names(path: str | Path) -> dict[int, str]:
    """``{label value: name}`` for a label map or a file that names its values.

    Parameters
    ----------
    path : str or pathlib.Path
        ``dataset.json`` (nnU-Net v2) or a folder holding one; a ``*.labels.json`` sidecar; a
        DICOM-SEG file; or a NIfTI/NRRD/MetaImage label map, whose ``<stem>.labels.json`` is
        read (``{}`` when it has none).

    Returns
    -------
    dict of int to str
        Without the background (0).

    Raises
    ------
    XaimedError
        When the path does not exist or its names cannot be read.

    Examples
    --------
    >>> read_label_names("liver.nii.gz")  # reads liver.labels.json  # doctest: +SKIP
    {1: 'liver', 2: 'tumour'}
    """
    path = Path(path)
    if not path.exists():
        raise XaimedError(f"No file at {str(path)!r}: check the path.")
    if path.is_dir() or path.name == "dataset.json":
        return nnunet_label_names(path)
    if path.name.lower().endswith(SIDECAR_SUFFIX):
        return parse_sidecar(_load_json(path), path.name)
    if path.name.lower().endswith(_VOLUME_SUFFIXES):
        return sidecar_names(path)
    return dicom_seg_names(path)
