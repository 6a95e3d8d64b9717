"""Registration with real ANTs on data whose deformation is known."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from napari_xaimed import XaimedError
from napari_xaimed._core import spawned as spawned_module
from napari_xaimed._core.spawned import run_spawned
from napari_xaimed.registration import register, register_steps
from napari_xaimed.samples import longitudinal_pair


def ants_folders() -> set[str]:
    """The registration's temporary folders (others' runs may create theirs meanwhile)."""
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("xaimed-ants-")}


@pytest.fixture(scope="module")
def pair():
    return longitudinal_pair(seed=0)


@pytest.fixture(scope="module")
def syn(pair):
    # cross-correlation (radius 2 voxels), ANTs' usual choice for two scans of one modality
    return register(pair.fixed, pair.moving, fixed_spacing=pair.spacing,
                    moving_spacing=pair.spacing, transform="SyN", metric="CC", sampling=2,
                    fixed_labels=pair.fixed_labels, moving_labels=pair.moving_labels)


def endpoint_error_voxels(field, truth, spacing, mask):
    return np.linalg.norm((field - truth) / np.asarray(spacing), axis=-1)[mask].mean()


def test_syn_recovers_the_known_deformation(pair, syn):
    body = pair.body > 0
    error = endpoint_error_voxels(syn.displacement, pair.displacement, pair.spacing, body)
    identity = endpoint_error_voxels(0 * pair.displacement, pair.displacement, pair.spacing, body)
    assert error < 1.0
    assert error < 0.5 * identity
    assert syn.displacement.shape == pair.fixed.shape + (3,)
    m = syn.metrics
    assert m["ncc_after"] > m["ncc_before"] and m["mi_after"] > m["mi_before"]
    assert all(m["dice_after"][k] > m["dice_before"][k] for k in m["dice_before"])
    assert m["folded_voxels"] == 0 and m["jacobian_min"] > 0


def test_our_field_reproduces_ants_warped_image(pair, syn):
    ours = syn.apply(pair.moving)
    inside = pair.body > 0
    assert np.abs(ours - syn.warped)[inside].max() < 1e-3 * np.abs(syn.warped).max()


def test_seeded_runs_are_bit_identical(pair):
    kwargs = dict(fixed_spacing=pair.spacing, moving_spacing=pair.spacing, transform="SyN",
                  metric="meansquares", seed=5)
    first = register(pair.fixed, pair.moving, **kwargs)
    again = register(pair.fixed, pair.moving, **kwargs)
    np.testing.assert_array_equal(again.displacement, first.displacement)
    np.testing.assert_array_equal(again.warped, first.warped)


def blobs(spacing, shape_mm=(40.0, 40.0, 40.0), shift_mm=(0.0, 0.0, 0.0)):
    """Smooth analytic blobs sampled on a grid of ``spacing``, moved by ``shift_mm``."""
    shape = tuple(int(round(s / sp)) for s, sp in zip(shape_mm, spacing, strict=True))
    p = np.stack(np.meshgrid(*[np.arange(n) * sp for n, sp in zip(shape, spacing, strict=True)],
                             indexing="ij"), axis=-1) - np.asarray(shift_mm)
    out = np.zeros(shape, np.float32)
    for centre, width, value in (((20, 20, 20), 7.0, 1.0), ((12, 26, 15), 4.0, 0.7),
                                 ((27, 13, 25), 3.0, 0.5)):
        out += value * np.exp(-np.sum((p - centre) ** 2, axis=-1) / (2 * width**2))
    return out


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_translation_of_known_sign_in_mm_whatever_the_spacing(spacing):
    """The fixed scan shows the anatomy 3 mm further along y: fixed(p) = moving(p - 3 mm y),
    so the pull-back displacement is -3 mm in y, the same on an anisotropic grid."""
    fixed = blobs(spacing, shift_mm=(0.0, 3.0, 0.0))
    moving = blobs(spacing)
    result = register(fixed, moving, fixed_spacing=spacing, moving_spacing=spacing,
                      transform="Translation")
    mean = result.displacement.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(mean, [0.0, -3.0, 0.0], atol=0.15)
    vectors, lengths = result.vectors(step=10)
    assert np.all(vectors[:, 1, 1] < 0)  # drawn pointing to -y, in voxels of the fixed grid
    np.testing.assert_allclose(lengths, 3.0, atol=0.15)


def test_different_grids_and_landmarks():
    """A coarse moving scan onto a finer fixed one: the field lives on the fixed grid, and a
    landmark's TRE drops from the shift to about zero."""
    fixed = blobs((1.0, 1.0, 1.0), shift_mm=(2.0, 0.0, 0.0))
    moving = blobs((2.0, 2.0, 2.0))
    result = register(fixed, moving, fixed_spacing=(1, 1, 1), moving_spacing=(2, 2, 2),
                      transform="Rigid", fixed_points=[[22.0, 20.0, 20.0]],
                      moving_points=[[20.0, 20.0, 20.0]])
    assert result.warped.shape == fixed.shape
    assert result.metrics["tre_before_mean_mm"] == pytest.approx(2.0)
    assert result.metrics["tre_after_mean_mm"] < 0.3


def test_transforms_are_kept_only_when_asked_and_tmp_stays_clean(tmp_path):
    fixed, moving = blobs((2, 2, 2), shift_mm=(0, 2, 0)), blobs((2, 2, 2))
    before = ants_folders()
    result = register(fixed, moving, fixed_spacing=(2, 2, 2), moving_spacing=(2, 2, 2),
                      transform="SyNOnly", iterations=(5, 0), transforms_dir=tmp_path)
    names = sorted(Path(f).name for f in result.transform_files)
    assert any(n.endswith("Warp.nii.gz") for n in names)
    assert any(n.endswith("InverseWarp.nii.gz") for n in names)
    assert ants_folders() - before == set()


def test_cancel_kills_ants_and_removes_its_folder(pair, monkeypatch):
    started = []

    class Recording(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(spawned_module.subprocess, "Popen", Recording)
    before = ants_folders()
    steps = register_steps(pair.fixed, pair.moving, fixed_spacing=pair.spacing,
                           moving_spacing=pair.spacing, transform="SyN",
                           iterations=(200, 200, 200))
    for progress in steps:
        if "stage 2" in progress.message:  # ANTs is in its deformable stage
            break
    else:
        pytest.fail("the registration ended before its deformable stage was reported")
    steps.close()
    assert started and started[0].poll() is not None
    assert ants_folders() - before == set()


def test_bad_inputs_say_what_to_fix(pair):
    with pytest.raises(XaimedError, match="3D"):
        register(pair.fixed[0], pair.moving)
    with pytest.raises(XaimedError, match="constant"):
        register(np.ones((8, 8, 8)), pair.moving)
    with pytest.raises(XaimedError, match="do not overlap"):
        register(pair.fixed, pair.moving, moving_origin=(500.0, 0.0, 0.0))
    with pytest.raises(XaimedError, match="fixed_mask"):
        register(pair.fixed, pair.moving, fixed_mask=np.ones((3, 3, 3)))
    with pytest.raises(XaimedError, match="NaN"):
        bad = pair.moving.copy()
        bad[0, 0, 0] = np.nan
        register(pair.fixed, bad)


def test_a_failing_child_becomes_a_clear_error(tmp_path):
    # ants_seed takes one argument, the child passes two: the child fails, we are told why
    with pytest.raises(XaimedError, match="TypeError"):
        list(run_spawned("napari_xaimed.registration.params:ants_seed", {}, tmp_path,
                         what="the test job"))


@pytest.mark.parametrize("transform", ["Affine", "SyNRA"])
def test_our_composition_equals_ants_compose(tmp_path, transform):
    """ants_job.compose (numpy, from the transform files) against ANTs' own composed field, on
    grids with an origin and anisotropic spacing."""
    import ants

    from napari_xaimed.registration.ants_job import compose

    pair = longitudinal_pair(shape=(32, 36, 34), spacing=(1.5, 1.0, 0.9), seed=3)
    fixed = ants.from_numpy(pair.fixed, spacing=pair.spacing, origin=(3.0, -2.0, 1.0))
    moving = ants.from_numpy(pair.moving, spacing=pair.spacing, origin=(0.0, 0.5, 0.0))
    reg = ants.registration(fixed, moving, transform, outprefix=str(tmp_path / "r_"),
                            reg_iterations=(10, 5, 0))
    theirs = ants.image_read(ants.apply_transforms(
        fixed, moving, reg["fwdtransforms"], compose=str(tmp_path / "c_"))).numpy()
    ours = compose(reg["fwdtransforms"], fixed)
    assert ours is not None
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_a_prewarmed_child_is_used_and_a_failed_import_is_reported(tmp_path):
    spawned_module.prewarm("napari_xaimed.registration.params", {"XAIMED_TEST": 1})
    key = spawned_module._key("napari_xaimed.registration.params", {"XAIMED_TEST": 1})
    warm = spawned_module._WARM[key]
    with pytest.raises(XaimedError, match="TypeError"):
        list(run_spawned("napari_xaimed.registration.params:ants_seed",
                         {"environment": {"XAIMED_TEST": 1}}, tmp_path))
    assert key not in spawned_module._WARM and warm.poll() is not None  # it ran the job
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(XaimedError, match="ModuleNotFoundError"):
        list(run_spawned("napari_xaimed.registration.params:ants_seed", {}, other,
                         preload="no_such_module_here"))


@pytest.mark.parametrize("transform", ["Affine", "SyNRA", "ElasticSyN", "QuickSyN"])
def test_every_offered_transform_runs_and_aligns(transform):
    """The transforms the widget offers run end to end through our process and field code."""
    fixed, moving = blobs((2, 2, 2), shift_mm=(0, 3, 0)), blobs((2, 2, 2))
    params = {} if transform == "QuickSyN" else {"iterations": (20, 10)}
    if transform in ("Affine",):
        params = {"iterations": (50, 20)}
    result = register(fixed, moving, fixed_spacing=(2, 2, 2), moving_spacing=(2, 2, 2),
                      transform=transform, **params)
    assert np.isfinite(result.displacement).all()
    assert result.metrics["ncc_after"] > result.metrics["ncc_before"]
    anatomy = fixed > 0.5 * fixed.max()  # where the images have content to align
    assert result.displacement[..., 1][anatomy].mean() == pytest.approx(-3.0, abs=0.75)


def test_affine_levels_reach_ants(tmp_path, capfd):
    """antspyx takes per-level affine settings only as tuples, and the job reaches the child as
    JSON (lists): ours must arrive as two levels, not fall back to its fixed four."""
    import json

    from napari_xaimed.registration import ants_job
    from napari_xaimed.registration.params import ants_arguments

    fixed, moving = blobs((2, 2, 2), shift_mm=(0, 3, 0)), blobs((2, 2, 2))
    np.save(tmp_path / "fixed.npy", fixed)
    np.save(tmp_path / "moving.npy", moving)
    job = json.loads(json.dumps({
        "transform": "Affine", "ants_arguments": ants_arguments("Affine", {"iterations": (30, 10)}),
        "ants_seed": 1, "fixed_spacing": (2, 2, 2), "fixed_origin": (0, 0, 0),
        "moving_spacing": (2, 2, 2), "moving_origin": (0, 0, 0)}))
    ants_job.run(job, tmp_path)
    log = capfd.readouterr().out  # ANTs' C++ output
    assert "number of levels = 2" in log and "number of levels = 4" not in log


def test_the_child_imports_nothing_from_the_launch_folder(tmp_path, monkeypatch):
    """python -m puts the working folder first on sys.path: a numpy.py where napari was started
    must not run in the ANTs child (it would run with the user's rights, unasked)."""
    marker = tmp_path / "launch-folder-code-ran"
    (tmp_path / "numpy.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('not the real numpy')\n")
    monkeypatch.chdir(tmp_path)
    spawned_module._drop_warm()  # a child started earlier was started from another folder
    fixed, moving = blobs((4, 4, 4), shift_mm=(0, 2, 0)), blobs((4, 4, 4))
    result = register(fixed, moving, fixed_spacing=(4, 4, 4), moving_spacing=(4, 4, 4),
                      transform="Translation", iterations=(5, 0))
    assert not marker.exists()
    assert np.isfinite(result.displacement).all()


def test_a_child_that_cannot_start_says_why(tmp_path, monkeypatch):
    # an interpreter that cannot import the package: the child dies before it has a job folder
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(spawned_module.sys, "executable", str(tmp_path / "python"))
    (tmp_path / "python").write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named "
                                     "napari_xaimed' >&2\nexit 1\n")
    (tmp_path / "python").chmod(0o755)
    job = tmp_path / "job"
    job.mkdir()
    with pytest.raises(XaimedError, match="could not start its process.*ModuleNotFoundError"):
        for _ in run_spawned("napari_xaimed.registration.ants_job:run", {}, job,
                             preload="napari_xaimed.nowhere", what="ANTs Affine registration"):
            pass


def test_our_process_registers_as_plain_ants(tmp_path):
    """The ANTs process imports ANTs without its learning and plotting parts
    (``_core.ants_import``): its Affine result equals a plain ``import ants;
    ants.registration(...)`` with the same arguments, seed and one ITK thread."""
    import json

    from napari_xaimed.registration.params import ants_arguments, ants_seed

    fixed, moving = blobs((2, 2, 2), shift_mm=(0, 3, 2)), blobs((2, 2, 2))
    ours = register(fixed, moving, fixed_spacing=(2, 2, 2), moving_spacing=(2, 2, 2),
                    transform="Affine", seed=0)
    np.save(tmp_path / "fixed.npy", fixed.astype(np.float32))
    np.save(tmp_path / "moving.npy", moving.astype(np.float32))
    (tmp_path / "args.json").write_text(json.dumps(ants_arguments("Affine", {})))
    script = f"""
import json, numpy as np, ants
folder = {str(tmp_path)!r}
args = {{k: tuple(v) if isinstance(v, list) else v
        for k, v in json.load(open(folder + "/args.json")).items()}}
ants.config._random_seed = {ants_seed(0)}
image = lambda n: ants.from_numpy(np.load(folder + "/" + n + ".npy"), spacing=(2, 2, 2))
reg = ants.registration(image("fixed"), image("moving"), "Affine",
                        outprefix=folder + "/bare_", **args)
np.save(folder + "/bare.npy", reg["warpedmovout"].numpy())
"""
    subprocess.run([sys.executable, "-c", script], check=True,
                   env={**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"})
    warped = np.load(tmp_path / "bare.npy")
    assert np.abs(ours.warped - warped).max() <= 1e-5 * np.abs(warped).max()


def test_the_ants_process_leaves_out_what_registration_never_uses():
    """What the ANTs process skips (matplotlib, scikit-learn) is never loaded there, and
    statsmodels only on first use; what registration calls is all there."""
    code = ("import sys; from napari_xaimed._core.ants_import import import_ants; "
            "a = import_ants(); "
            "print(all(hasattr(a, n) for n in ('registration', 'atropos', 'apply_transforms', "
            "'from_numpy', 'read_transform', 'image_read')), "
            "'matplotlib' in sys.modules, 'sklearn' in sys.modules, "
            "type(sys.modules.get('statsmodels.api')).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "False", "False", "_LazyModule"]
