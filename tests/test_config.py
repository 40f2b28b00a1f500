"""The campaign file: every error names the key and what is accepted; built-ins load; the spec
round-trips through jobs.contract.spec."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc.campaign.config import (
    BUILTIN_CAMPAIGNS,
    ConfigError,
    dump_campaign,
    load_campaign,
    parse_campaign,
    resolve_campaign_path,
)
from jobs.contract.spec import EvaluationSpec

BASE = {
    "space": {"am_wt_frac": [0.85, 0.95], "porosity": [0.3, 0.4], "mass_loading_mg_cm2": 20.0},
    "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
}


def _with(section: str, **values) -> dict:
    data = {k: dict(v) for k, v in BASE.items()}
    data.setdefault(section, {}).update(values)
    return data


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_campaign(data)
    return str(info.value)


def test_quick_loads_and_makes_a_valid_evaluation_spec():
    config = load_campaign("quick")
    assert 2 <= len(config.space.bounds()) <= 4
    spec = config.to_spec_dict()
    assert EvaluationSpec.from_dict(spec).to_dict() == spec
    assert spec["seed"] == config.optimizer.seed


def test_builtin_names_resolve_to_packaged_files():
    assert resolve_campaign_path("quick").name == "quick.toml"
    for name in BUILTIN_CAMPAIGNS:
        try:
            path = resolve_campaign_path(name)
        except ConfigError as error:  # cs1-3 are added by the case-studies work
            assert name in str(error)
        else:
            assert path.name == f"{name}.toml"


def test_unknown_key_is_named_with_the_allowed_keys():
    message = _error(_with("fidelity", n_cube=4))
    assert "fidelity.n_cube: unknown key" in message
    assert "n_cubes" in message and "cube_voxels" in message


def test_unknown_section_is_rejected():
    data = _with("space")
    data["optimiser"] = {"budget": 3}
    message = _error(data)
    assert "optimiser: unknown key" in message and "optimizer" in message


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("space", "porosity", [0.1, 0.4], "[0.2, 0.55]"),
    ("space", "am_wt_frac", 0.99, "[0.8, 0.98]"),
    ("space", "mass_loading_mg_cm2", [30.0, 20.0], "low < high"),
    ("space", "binder_adhesion", [0.0, 1.5], "[0.0, 1.0]"),
    ("objective", "kind", "Wh", "energy_density_Wh_L"),
    ("fidelity", "backend", "cuda-magic", "taufactor"),
    ("fidelity", "cube_voxels", 4, "[16, 1024]"),
    ("optimizer", "backend", "hyperopt", "botorch"),
    ("resources", "executor", "kubernetes", "slurm"),
    ("resources", "partition", "debug; rm -rf /", "allowed characters"),
])
def test_bad_values_name_the_dotted_key_and_the_accepted_values(section, key, value, expected):
    message = _error(_with(section, **{key: value}))
    assert f"{section}.{key}" in message
    assert expected in message


def test_objective_needs_exactly_one_operating_point():
    data = _with("objective", c_rate=1.0)  # power_W is set as well
    assert "exactly one of power_W" in _error(data)


def test_initial_design_is_capped_at_the_budget():
    config = parse_campaign(_with("optimizer", n_initial=5, budget=3))
    assert config.optimizer.n_initial == 3


def test_nothing_varying_is_rejected():
    data = _with("space", am_wt_frac=0.9, porosity=0.3)
    assert "nothing varies" in _error(data)


def test_thickness_and_mass_loading_conflict():
    assert "cell.thickness_um" in _error(_with("cell", thickness_um=80.0))


def test_fixed_and_varied_parameters_are_split():
    config = parse_campaign(_with("space", binder_adhesion=0.3))
    assert config.space.bounds() == {"am_wt_frac": (0.85, 0.95), "porosity": (0.3, 0.4)}
    assert config.space.fixed() == {"binder_adhesion": 0.3, "mass_loading_mg_cm2": 20.0}
    space = config.space.to_bayes_space()
    assert set(space.free_names) == {"am_wt_frac", "porosity"}


def test_missing_model_file_is_reported(tmp_path):
    data = _with("generator", kind="model", model_path=str(tmp_path / "nope.pt"))
    assert "generator.model_path" in _error(data)


def test_frozen_config_round_trips(tmp_path):
    config = load_campaign("quick", {"optimizer": {"budget": 3, "seed": 7}})
    dump_campaign(config, tmp_path / "campaign.toml")
    again = load_campaign(tmp_path / "campaign.toml")
    assert again == config
    assert tomllib.loads((tmp_path / "campaign.toml").read_text())["optimizer"]["budget"] == 3


def test_missing_file_names_the_builtins(tmp_path):
    with pytest.raises(ConfigError, match="quick"):
        load_campaign(tmp_path / "absent.toml")


def test_calibration_file_is_read_into_the_spec_relative_to_the_campaign(tmp_path):
    import json

    from kernels.cell.calibration import FIT_PARAMETERS, Calibration, fit_parameter

    name = next(iter(FIT_PARAMETERS))
    limits = fit_parameter(name)
    calibration = Calibration(values={name: (limits.lower + limits.upper) / 2})
    (tmp_path / "fit.json").write_text(json.dumps(calibration.to_dict()))
    config = parse_campaign(_with("cell", calibration="fit.json"), base_dir=tmp_path)
    assert config.to_spec_dict()["cell"]["calibration"] == calibration.to_dict()

    with pytest.raises(ConfigError, match="cell.calibration"):
        parse_campaign(_with("cell", calibration="absent.json"), base_dir=tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"values": {name: limits.upper + 1e6}}))
    with pytest.raises(ValueError, match="cell.calibration"):
        parse_campaign(_with("cell", calibration="bad.json"), base_dir=tmp_path).to_spec_dict()


# ---- one set of ranges: what the file accepts, the stages accept (issue 14) -----------------

def _write(tmp_path, text: str):
    path = tmp_path / "campaign.toml"
    path.write_text(text)
    return path


TOML_SPACE = '[space]\nam_wt_frac = [0.85, 0.95]\nporosity = [0.3, 0.4]\n'


def test_a_30C_campaign_is_refused_naming_c_rate_and_the_cell_models_range(tmp_path):
    path = _write(tmp_path, TOML_SPACE + 'mass_loading_mg_cm2 = 20.0\n'
                  '[objective]\nkind = "energy_density_Wh_L"\nc_rate = 30.0\n')
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    assert "objective.c_rate" in str(info.value) and "[0.01, 20.0]" in str(info.value)
    from kernels.cell.design import check_range

    with pytest.raises(ValueError, match="c_rate"):   # the cell model refuses it the same way
        check_range("c_rate", 30.0)


def test_a_400_um_cathode_is_refused_naming_thickness_and_both_bounds(tmp_path):
    path = _write(tmp_path, TOML_SPACE + '[objective]\nkind = "energy_density_Wh_L"\n'
                  'power_W = 10.0\n[cell]\nthickness_um = 400.0\n')
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    assert "cell.thickness_um" in str(info.value) and "[20.0, 300.0]" in str(info.value)


def test_a_loading_box_whose_corner_thicknesses_leave_the_cell_models_range_is_refused():
    # L = m / (phi_AM rho_AM): 50 mg/cm2 at 0.85 wt% / porosity 0.4 (phi_AM 0.409) is 257 um
    # (fits); at 0.80 wt% / porosity 0.55 (phi_AM 0.271) it is 388 um, beyond 300
    fits = _with("space", mass_loading_mg_cm2=[10.0, 50.0])
    parse_campaign(fits)
    message = _error(_with("space", am_wt_frac=[0.80, 0.95], porosity=[0.3, 0.55],
                           mass_loading_mg_cm2=[10.0, 50.0]))
    assert "space.mass_loading_mg_cm2" in message and "[20.0, 300.0]" in message
    assert "388" in message   # the thickest corner, named
    thin = _error(_with("space", mass_loading_mg_cm2=5.0))   # at 0.95 / 0.3 (phi_AM 0.615): 17.1 um
    assert "space.mass_loading_mg_cm2" in thin and "17.1" in thin


@pytest.mark.parametrize(("section", "key", "value", "shown"), [
    ("optimizer", "budget", "4", "'4'"),
    ("space", "binder_adhesion", True, "True"),
    ("objective", "half_cell", "yes", "'yes'"),
    ("fidelity", "cube_voxels", 32.0, "32.0"),
    ("fidelity", "n_cubes", True, "True"),
    ("objective", "power_W", "10", "'10'"),
    ("cell", "packaging", {"can_wall_mm": "0.5"}, "'0.5'"),
])
def test_values_of_the_wrong_type_are_refused_not_converted(section, key, value, shown):
    message = _error(_with(section, **{key: value}))
    assert f"{section}.{key}" in message and f"got {shown}" in message


@pytest.mark.parametrize(("section", "key", "value"), [
    ("space", "porosity", float("nan")),
    ("space", "porosity", [0.3, float("inf")]),
    ("objective", "power_W", float("inf")),
    ("fidelity", "rel_tol", float("nan")),
    ("resources", "mem_gb", float("nan")),
])
def test_nan_and_inf_are_refused_as_not_finite(section, key, value):
    message = _error(_with(section, **{key: value}))
    assert f"{section}.{key}" in message and "finite" in message


@pytest.mark.parametrize(("section", "key", "value", "bounds"), [
    ("objective", "power_W", 0.0, "[0.1, 20000.0] W"),
    ("fidelity", "cube_voxels", 2048, "[16, 1024]"),
    ("fidelity", "voxel_um", 0.0, "[0.01, 10.0] um"),
    ("generator", "mean_diameter_um", 0.1, "[0.5, 50.0] um"),
    ("resources", "mem_gb", 0.0, "> 0 and <= 4096"),
    ("optimizer", "budget", 0, ">= 1 and <= 1000000"),
    ("fidelity", "n_cubes", 0, ">= 1 and <= 4096"),
])
def test_range_errors_name_both_bounds(section, key, value, bounds):
    message = _error(_with(section, **{key: value}))
    assert f"{section}.{key}" in message and bounds in message


@pytest.mark.parametrize("name", [
    "../../x", "/abs/path", "a/b", "a\\b", "..", "a..b", "", "x" * 65, "a\x00b", "a\nb",
    "$\\frac{$", "has space", ".hidden", "-option",
])
def test_unsafe_campaign_names_are_refused(name):
    data = _with("space")
    data["name"] = name
    message = _error(data)
    assert "name:" in message and "letters, digits" in message


def test_plain_campaign_names_are_accepted():
    for name in ("cs1", "thick-electrodes_v2.1", "A" * 64):
        data = _with("space")
        data["name"] = name
        assert parse_campaign(data).name == name


def test_min_percolating_fraction_reaches_the_spec_and_is_checked():
    assert parse_campaign(_with("space")).to_spec_dict()["objective"][
        "min_percolating_fraction"] == 1.0
    spec = parse_campaign(_with("objective", min_percolating_fraction=0.5)).to_spec_dict()
    assert EvaluationSpec.from_dict(spec).objective.min_percolating_fraction == 0.5
    for bad in (1.5, -0.1, "1"):
        message = _error(_with("objective", min_percolating_fraction=bad))
        assert "objective.min_percolating_fraction" in message


def test_an_unreadable_campaign_file_is_a_config_error(tmp_path):
    (tmp_path / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_campaign(tmp_path / "latin1.toml")
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(ConfigError, match="folder.toml"):
        load_campaign(tmp_path / "folder.toml")


# ---- a trained generator brings its own voxel size (issue 14) ---------------------------------

def test_the_shipped_generator_sets_the_voxel_size_and_generates(tmp_path):
    from jobs.generate import generate_samples
    from jobs.store import DesignStore
    from kernels.generator.model import load_default_model

    model_voxel_um = load_default_model().config.voxel_um
    path = _write(tmp_path, TOML_SPACE + 'mass_loading_mg_cm2 = 20.0\n'
                  '[objective]\nkind = "energy_density_Wh_L"\npower_W = 10.0\n'
                  '[generator]\nkind = "default"\n[fidelity]\nn_cubes = 1\ncube_voxels = 32\n')
    config = load_campaign(path)
    spec = config.to_spec_dict()
    assert spec["fidelity"]["voxel_um"] == model_voxel_um
    params = {"am_wt_frac": 0.9, "porosity": 0.35, "binder_adhesion": 0.5,
              "mass_loading_mg_cm2": 20.0}
    assert generate_samples(tmp_path / "run", 0, params, spec, device="cpu") == [0]
    volume = DesignStore.open(tmp_path / "run", 0).read_sample(0)
    assert volume.shape == (32, 32, 32) and set(np.unique(volume)) <= {0, 1, 2}

    other = 2 * model_voxel_um   # a size the model was not trained at: both numbers named
    message = _error(_with("generator", kind="default") | {"fidelity": {"voxel_um": other}})
    assert "fidelity.voxel_um" in message and str(other) in message
    assert str(model_voxel_um) in message


def test_a_model_path_that_is_not_a_model_is_refused(tmp_path):
    (tmp_path / "notes.pt").write_text("not a model")
    message = _error(_with("generator", kind="model", model_path=str(tmp_path / "notes.pt")))
    assert "generator.model_path" in message and "not a generator" in message


# ---- malformed campaign files: a ConfigError naming the field, never another exception -------

_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", "..", "/etc", "a\x00b", "line\nbreak", "$\\frac{$", "default", "slurm"]),
    st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
_SECTIONS = {
    "space": ["am_wt_frac", "porosity", "binder_adhesion", "mass_loading_mg_cm2", "log_scale"],
    "objective": ["kind", "power_W", "c_rate", "half_cell", "noise_from_samples",
                  "min_percolating_fraction"],
    "generator": ["kind", "model_path", "mean_diameter_um", "diameter_spread", "calendering"],
    "fidelity": ["n_cubes", "cube_voxels", "voxel_um", "backend", "rel_tol",
                 "conductivity_am_S_m", "mpi_ranks", "from_convergence"],
    "cell": ["parameter_set", "packaging", "thickness_um", "ragone_powers_W", "calibration"],
    "optimizer": ["backend", "n_initial", "budget", "max_concurrent", "seed", "mode", "options"],
    "resources": ["executor", "partition", "mem_gb", "walltime_min", "sbatch_options"],
    "warm_start": ["campaigns"],
}


@st.composite
def _malformed(draw):
    data = {k: dict(v) for k, v in BASE.items()}
    where = []
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from([*_SECTIONS, "name", "description", "bogus"]))
        if section in _SECTIONS:
            key = draw(st.sampled_from(_SECTIONS[section] + ["typo_key"]))
            table = data.setdefault(section, {})
            if isinstance(table, dict):
                table[key] = draw(_JUNK)
                where.append((section, key))
        else:
            data[section] = draw(_JUNK)
            where.append((section, None))
    if draw(st.booleans()) and draw(st.booleans()):
        victim = draw(st.sampled_from(list(_SECTIONS)))
        data[victim] = draw(_JUNK)
        where.append((victim, None))
    return data, where


@settings(max_examples=300, deadline=None)
@given(_malformed())
def test_malformed_campaigns_raise_config_error_naming_a_changed_field(case):
    data, where = case
    try:
        parse_campaign(data)
    except ConfigError as error:
        message = str(error)
        assert any(section in message and (key is None or key in message)
                   for section, key in where), (message, where)


_NOT_A_NUMBER = st.one_of(
    st.booleans(), st.text(max_size=8), st.sampled_from([math.nan, math.inf, -math.inf]),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.text(max_size=3), min_size=1, max_size=3),
)
_NOT_A_BOOL = st.one_of(st.integers(), st.floats(allow_nan=False), st.sampled_from(
    ["true", "yes", "1", ""]), st.lists(st.booleans(), max_size=2))
_CHOICES = {
    ("objective", "kind"): ["energy_density_Wh_L", "specific_energy_Wh_kg", "capacity_mAh_g"],
    ("generator", "kind"): ["procedural", "default", "model"],
    ("generator", "calendering"): ["flatten", "rearrange"],
    ("fidelity", "backend"): ["taufactor", "native"],
    ("optimizer", "backend"): ["botorch", "dragonfly", "sobol", "random"],
    ("optimizer", "mode"): ["async", "sync"],
    ("resources", "executor"): ["local", "slurm", "debug"],
}
_NUMBERS = {
    "space": ["am_wt_frac", "porosity", "binder_adhesion", "mass_loading_mg_cm2"],
    "objective": ["power_W", "min_percolating_fraction"],
    "generator": ["mean_diameter_um", "diameter_spread"],
    "fidelity": ["n_cubes", "cube_voxels", "voxel_um", "rel_tol", "mpi_ranks"],
    "cell": ["thickness_um"],
    "optimizer": ["n_initial", "budget", "max_concurrent", "seed"],
    "resources": ["mem_gb", "walltime_min", "max_retries", "gpus_per_task"],
}
_BOOLS = {"objective": ["half_cell", "noise_from_samples"]}


@st.composite
def _invalid(draw):
    """A campaign with one value that no correct schema accepts, and where it is."""
    data = {k: dict(v) for k, v in BASE.items()}
    kind = draw(st.sampled_from(["number", "bool", "choice", "name", "section", "key"]))
    if kind == "number":
        section = draw(st.sampled_from(list(_NUMBERS)))
        key, value = draw(st.sampled_from(_NUMBERS[section])), draw(_NOT_A_NUMBER)
    elif kind == "bool":
        section, key, value = "objective", draw(st.sampled_from(_BOOLS["objective"])), \
            draw(_NOT_A_BOOL)
    elif kind == "choice":
        section, key = draw(st.sampled_from(list(_CHOICES)))
        value = draw(st.one_of(st.integers(), st.booleans(), st.text(max_size=12).filter(
            lambda text, allowed=_CHOICES[(section, key)]: text not in allowed)))
    elif kind == "name":
        section, key = "name", None
        value = draw(st.one_of(
            st.integers(), st.booleans(),
            st.tuples(st.text(max_size=6), st.sampled_from(["/", "\\", "..", "$", "\x00", "\n",
                                                            " "]), st.text(max_size=6)
                      ).map("".join),
            st.text(alphabet="ab", min_size=65, max_size=80)))
        data["name"] = value
        return data, section, key
    elif kind == "section":
        section, key = draw(st.sampled_from(["space", "objective", "fidelity", "cell"])), None
        data[section] = draw(st.one_of(st.integers(), st.text(max_size=5), st.booleans(),
                                       st.lists(st.integers(), max_size=2)))
        return data, section, key
    else:
        section = draw(st.sampled_from(list(_NUMBERS)))
        key, value = "no_such_key", draw(_JUNK)
    data.setdefault(section, {})[key] = value
    return data, section, key


@settings(max_examples=300, deadline=None)
@given(_invalid())
def test_invalid_values_are_refused_with_a_config_error_naming_the_field(case):
    data, section, key = case
    with pytest.raises(ConfigError) as info:
        parse_campaign(data)
    where = section if key is None else f"{section}.{key}"
    assert where in str(info.value), str(info.value)


def test_the_ranges_table_in_the_docs_is_the_one_in_kernels_cell_ranges():
    """docs/campaigns.md lists the accepted ranges; they must be the ones the code enforces."""
    import re
    from pathlib import Path

    from kernels.cell import ranges

    text = (Path(__file__).parents[1] / "docs" / "campaigns.md").read_text()
    rows = re.findall(r"^\| `([A-Za-z0-9_.]+)`[^|]*\| ([-0-9.e]+) – ([-0-9.e]+) \| [^|]+ \| `ranges\.(\w+)`",
                      text, flags=re.MULTILINE)
    assert len(rows) >= 13
    for key, low, high, name in rows:
        physical = getattr(ranges, name)
        assert (float(low), float(high)) == physical.bounds, key
