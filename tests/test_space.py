"""Space: unit-cube maps, validation messages, constraints in both coordinates, JSON round-trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bayes.space import Space


def electrode_space() -> Space:
    return Space(
        bounds={
            "am_wt_frac": (0.80, 0.98),
            "porosity": (0.20, 0.55),
            "mass_loading_mg_cm2": (5.0, 40.0),
            "binder_adhesion": (0.0, 1.0),
        },
        constraints=[({"am_wt_frac": 1.0, "porosity": 1.0}, "<=", 1.3)],
        log_scale=["mass_loading_mg_cm2"],
        fixed={"binder_adhesion": 0.5},
        units={"mass_loading_mg_cm2": "mg/cm2"},
    )


def test_free_names_exclude_fixed_and_points_include_them():
    space = electrode_space()
    assert space.free_names == ["am_wt_frac", "porosity", "mass_loading_mg_cm2"]
    assert space.dim == 3
    point = space.from_unit(np.array([0.5, 0.5, 0.5]))
    assert list(point) == space.names
    assert point["binder_adhesion"] == 0.5


def test_unit_round_trip_linear_and_log():
    space = electrode_space()
    point = {"am_wt_frac": 0.9, "porosity": 0.3, "mass_loading_mg_cm2": 12.0}
    unit = space.to_unit(point)
    assert np.all((unit >= 0) & (unit <= 1))
    back = space.from_unit(unit)
    for name, value in point.items():
        assert back[name] == pytest.approx(value, rel=1e-12)
    # log scale: the geometric mean of the bounds sits in the middle of the cube
    middle = space.from_unit(np.array([0.0, 0.0, 0.5]))
    assert middle["mass_loading_mg_cm2"] == pytest.approx(math.sqrt(5.0 * 40.0))


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"am_wt_frac": 0.99, "porosity": 0.3, "mass_loading_mg_cm2": 10}, r"am_wt_frac = 0.99 is out of bounds \[0.8, 0.98\]"),
        ({"am_wt_frac": 0.9, "porosity": 0.3, "mass_loading_mg_cm2": 50}, r"out of bounds \[5.0, 40.0\] mg/cm2"),
        ({"am_wt_frac": float("nan"), "porosity": 0.3, "mass_loading_mg_cm2": 10}, "am_wt_frac is nan"),
        ({"am_wt_frac": 0.9, "porosity": 0.3, "mass_loading_mg_cm2": 10, "speed": 1}, r"unknown parameter\(s\) \['speed'\]; accepted names"),
        ({"am_wt_frac": 0.9, "mass_loading_mg_cm2": 10}, r"missing parameter\(s\) \['porosity'\]"),
        ({"am_wt_frac": 0.95, "porosity": 0.5, "mass_loading_mg_cm2": 10}, "violates the constraint 1\\*am_wt_frac \\+ 1\\*porosity <= 1.3"),
        ({"am_wt_frac": 0.9, "porosity": 0.3, "mass_loading_mg_cm2": 10, "binder_adhesion": 0.7}, "fixed at 0.5"),
        ({"am_wt_frac": "a lot", "porosity": 0.3, "mass_loading_mg_cm2": 10}, "must be a number"),
    ],
)
def test_validate_names_the_problem(point, message):
    with pytest.raises(ValueError, match=message):
        electrode_space().validate(point)


def test_unknown_name_error_lists_accepted_names():
    with pytest.raises(ValueError) as error:
        electrode_space().validate({"porosty": 0.3})
    assert "porosity" in str(error.value) and "am_wt_frac" in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bounds": {"a": (1.0, 0.0)}}, "lower 1.0 must be <= upper 0.0"),
        ({"bounds": {"a": (0.0, float("inf"))}}, "must be finite"),
        ({"bounds": {"a": (0.0, 1.0)}, "log_scale": ["a"]}, "positive lower bound"),
        ({"bounds": {"a": (0.0, 1.0)}, "log_scale": ["b"]}, "not a parameter"),
        ({"bounds": {"a": (0.0, 1.0)}, "fixed": {"a": 2.0}}, "outside its bounds"),
        ({"bounds": {"a": (0.0, 1.0)}, "fixed": {"a": 0.5}}, "nothing is left to optimise"),
        ({"bounds": {"a": (0.0, 1.0)}, "constraints": [({"b": 1.0}, "<=", 1.0)]}, "names 'b'"),
        ({"bounds": {"a": (0.0, 1.0)}, "constraints": [({"a": 1.0}, "<", 1.0)]}, r"use one of \['<=', '>='\]"),
        ({"bounds": {"a": (0.0, 1.0)}, "constraints": [({"a": 1.0}, ">=", 2.0)]}, "no feasible point"),
        ({"bounds": {"a": (0.1, 1.0)}, "log_scale": ["a"], "constraints": [({"a": 1.0}, "<=", 0.5)]}, "log scale"),
        ({"bounds": {"a": (0.0, 1.0)}, "constraints": [("a <= 1",)]}, "must be \\(coefficients"),
    ],
)
def test_bad_space_definitions_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Space(**kwargs)


def test_unit_constraints_agree_with_physical_constraints():
    space = Space(
        {"a": (0.0, 2.0), "b": (-1.0, 1.0), "c": (10.0, 20.0)},
        constraints=[({"a": 1.0, "b": 2.0, "d": 1.0}, "<=", 2.5), ({"a": 1.0, "c": -0.1}, ">=", -1.5)],
        fixed={"d": 0.5},
    )
    rng = np.random.default_rng(0)
    unit = rng.random((2000, 3))
    mask = space.feasible_unit(unit)
    assert 0 < mask.sum() < len(unit)
    for u, feasible in zip(unit, mask, strict=True):
        assert space.is_valid(space.from_unit(u)) == bool(feasible)


def test_projection_lands_inside_the_constraints():
    space = electrode_space()
    outside = np.array([[1.0, 1.0, 0.3], [0.9, 0.95, 0.1]])
    assert not space.feasible_unit(outside).any()
    projected = space.project_unit(outside)
    assert space.feasible_unit(projected).all()
    for p in space.from_unit_many(projected):
        space.validate(p)
    # the nearest feasible point: the free coordinate not in the constraint is unchanged
    assert projected[:, 2] == pytest.approx(outside[:, 2])


def test_json_round_trip():
    space = electrode_space()
    again = Space.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space
    assert again.log_scale == {"mass_loading_mg_cm2"}
    assert again.units == {"mass_loading_mg_cm2": "mg/cm2"}
    assert again.constraints[0].describe() == space.constraints[0].describe()
    with pytest.raises(ValueError, match="unknown Space keys"):
        Space.from_dict({**space.to_dict(), "colour": "red"})
