"""Parameter checks: ANTs ignores unknown names, so we must not."""

import pytest

from napari_xaimed import XaimedError
from napari_xaimed.registration.params import ants_arguments, ants_seed, transform_name


def test_names_and_aliases():
    assert transform_name("QuickSyN") == "antsRegistrationSyNQuick[s]"
    with pytest.raises(XaimedError, match="SyNRA"):
        transform_name("syn")


def test_tuned_parameters_map_onto_ants_arguments():
    assert ants_arguments("SyN", {"iterations": (30, 10, 0), "metric": "CC", "sampling": 3,
                                  "gradient_step": 0.25}) == {
        "reg_iterations": (30, 10, 0), "syn_metric": "CC", "syn_sampling": 3, "grad_step": 0.25}
    linear = ants_arguments("Affine", {"iterations": (100, 50, 20)})
    assert linear["aff_iterations"] == (100, 50, 20)
    assert linear["aff_shrink_factors"] == (4, 2, 1)  # ANTs wants one per level
    assert linear["aff_smoothing_sigmas"] == (2, 1, 0)


@pytest.mark.parametrize("transform, params, match", [
    ("SyN", {"iteration": 5}, "unknown registration parameters"),
    ("SyN", {"iterations": (0, 0)}, "at least one above 0"),
    ("SyN", {"metric": "MI"}, "metric must be one of"),
    ("Affine", {"gradient_step": 0.3}, "deformable"),
    ("antsRegistrationSyNQuick[s]", {"iterations": (10,)}, "fixed settings"),
])
def test_bad_parameters_are_refused(transform, params, match):
    with pytest.raises(XaimedError, match=match):
        ants_arguments(transform, params)


def test_seed_zero_is_not_the_clock():
    assert ants_seed(0) == 1  # ANTs reads --random-seed 0 as "seed from the clock"
    assert ants_seed(None) is None
    with pytest.raises(XaimedError):
        ants_seed(-1)
