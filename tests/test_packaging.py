"""The top-level napari.yaml is the one manifest, and it ships inside the wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parents[1]


def test_installed_distribution_serves_the_top_level_manifest():
    manifest = PluginManifest.from_distribution("napari-xaimed")
    top = PluginManifest.from_file(ROOT / "napari.yaml")
    assert manifest.name == top.name == "napari-xaimed"
    assert manifest.contributions == top.contributions
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert widgets == {"Segmentation", "Panoptic evaluation", "Registration", "Attribution",
                       "Explanation check", "Cases and latent space",
                       "Longitudinal explanation", "Display"}
    assert {s.key for s in manifest.contributions.sample_data} == {
        "lesion", "longitudinal", "panoptic", "mni152"}


def test_npe2_validate_passes():
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari_xaimed"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


def test_hub_metadata():
    from importlib.metadata import metadata

    meta = metadata("napari-xaimed")
    assert "Framework :: napari" in meta.get_all("Classifier")
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["License-Expression"] == "BSD-3-Clause"
    requires = meta.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    assert not any(r.lower().startswith(("pyqt", "pyside")) for r in core)
    torch = next(r for r in core if r.startswith("torch"))
    from packaging.specifiers import SpecifierSet

    assert "2.13.0" in SpecifierSet(torch.removeprefix("torch").split(";")[0])


@pytest.mark.slow
def test_wheel_contains_the_manifest(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("napari_xaimed-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        shipped = zf.read("napari_xaimed/napari.yaml")
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt")))
        weights = zf.read("napari_xaimed/models/weights/lesion_classifier.pt")
        config = zf.read("napari_xaimed/models/weights/lesion_classifier.json")
        segmenter = zf.read("napari_xaimed/models/weights/lesion_segmenter.pt")
    # the bundled model travels with the package, byte for byte
    source = ROOT / "src" / "napari_xaimed" / "models" / "weights"
    assert weights == (source / "lesion_classifier.pt").read_bytes()
    assert segmenter == (source / "lesion_segmenter.pt").read_bytes()
    assert config == (source / "lesion_classifier.json").read_bytes()
    assert shipped == (ROOT / "napari.yaml").read_bytes()
    assert b"napari-xaimed = napari_xaimed:napari.yaml" in entry_points
