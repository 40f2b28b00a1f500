"""What one design evaluation needs to know, as plain dataclasses that travel as JSON.

`hpc.campaign.config` builds an `EvaluationSpec` from the campaign file; the spec is then written next to
each trial (``trials/<id>/spec.json``) so that every job (an array task, an MPI rank started by
``mpiexec``, a Dask worker) reads the same values. Every check raises ``ValueError`` naming the
field and the accepted values, before any work is done.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

OBJECTIVE_KINDS = ("energy_density_Wh_L", "specific_energy_Wh_kg", "capacity_mAh_g")
PARAM_KEYS = ("am_wt_frac", "porosity", "binder_adhesion", "mass_loading_mg_cm2")
REQUIRED_PARAM_KEYS = ("am_wt_frac", "porosity")
PROCEDURAL = "procedural"
MAX_POWER_W = 20000.0       # the cell model's upper power per 4680 cell
DEFAULT_MODEL = "default"   # the trained generator shipped with microloop


def _require(ok: bool, name: str, accepted: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {accepted}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _from_dict(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys by name (typos fail loudly)."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a table/dict, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; accepted keys: {sorted(known)}")
    return cls(**data)


@dataclass
class FidelitySpec:
    """How finely a design is characterised: `n_cubes` independent cubes of `cube_voxels`^3."""

    n_cubes: int = 2
    cube_voxels: int = 64
    voxel_um: float = 0.4
    backend: str = "native"
    rel_tol: float = 1e-3
    # None = the documented defaults of kernels.metrics.volume (DEFAULT_CONDUCTIVITY_*_S_M)
    conductivity_am_S_m: float | None = None
    conductivity_cbd_S_m: float | None = None
    mpi_ranks: int = 1

    def validate(self) -> None:
        _require(isinstance(self.n_cubes, int) and self.n_cubes >= 1,
                 "fidelity.n_cubes", "an integer >= 1", self.n_cubes)
        _require(isinstance(self.cube_voxels, int) and 8 <= self.cube_voxels <= 1024,
                 "fidelity.cube_voxels", "an integer in [8, 1024]", self.cube_voxels)
        _require(_is_number(self.voxel_um) and self.voxel_um > 0,
                 "fidelity.voxel_um", "a number > 0 (micrometres per voxel)", self.voxel_um)
        _require(isinstance(self.backend, str) and self.backend != "",
                 "fidelity.backend", "a solver back-end name such as 'taufactor' or 'native'",
                 self.backend)
        _require(_is_number(self.rel_tol) and 0 < self.rel_tol < 1,
                 "fidelity.rel_tol", "a number in (0, 1)", self.rel_tol)
        for name in ("conductivity_am_S_m", "conductivity_cbd_S_m"):
            value = getattr(self, name)
            _require(value is None or (_is_number(value) and value > 0),
                     f"fidelity.{name}", "a number > 0 in S/m, or omitted for the default", value)
        _require(isinstance(self.mpi_ranks, int) and self.mpi_ranks >= 1,
                 "fidelity.mpi_ranks", "an integer >= 1", self.mpi_ranks)


@dataclass
class GeneratorSpec:
    """Where voxels come from: the procedural simulator, the shipped trained model ("default")
    or a trained model file (a path). The mean diameter/spread apply to the procedural one."""

    kind: str = PROCEDURAL
    mean_diameter_um: float = 8.0
    diameter_spread: float = 0.25

    def validate(self) -> None:
        _require(isinstance(self.kind, str) and self.kind != "",
                 "generator.kind",
                 f"'{PROCEDURAL}', '{DEFAULT_MODEL}' (the shipped model) or a model file path",
                 self.kind)
        _require(_is_number(self.mean_diameter_um) and self.mean_diameter_um > 0,
                 "generator.mean_diameter_um", "a number > 0 (micrometres)", self.mean_diameter_um)
        _require(_is_number(self.diameter_spread) and self.diameter_spread >= 0,
                 "generator.diameter_spread", "a number >= 0 (lognormal sigma)",
                 self.diameter_spread)

    @property
    def is_procedural(self) -> bool:
        return self.kind == PROCEDURAL


@dataclass
class ObjectiveSpec:
    """The number the optimiser maximises: one cell quantity at one power or one C-rate."""

    kind: str = "energy_density_Wh_L"
    power_W: float | None = 10.0
    c_rate: float | None = None
    half_cell: bool = False
    # also score every sample on its own: the spread of the per-sample objective is the design's
    # known observation noise for the optimiser (one more discharge per sample)
    noise_from_samples: bool = False

    def validate(self) -> None:
        _require(isinstance(self.noise_from_samples, bool), "objective.noise_from_samples",
                 "true or false", self.noise_from_samples)
        _require(self.kind in OBJECTIVE_KINDS, "objective.kind", f"one of {list(OBJECTIVE_KINDS)}",
                 self.kind)
        _require((self.power_W is None) != (self.c_rate is None), "objective.power_W/c_rate",
                 "exactly one of power_W (W per cell) or c_rate set",
                 {"power_W": self.power_W, "c_rate": self.c_rate})
        if self.power_W is not None:
            _require(_is_number(self.power_W) and 0 < self.power_W <= MAX_POWER_W,
                     "objective.power_W", f"a number in (0, {MAX_POWER_W:g}] (watts per cell)",
                     self.power_W)
        if self.c_rate is not None:
            _require(_is_number(self.c_rate) and self.c_rate > 0, "objective.c_rate",
                     "a number > 0 (1/h)", self.c_rate)
        _require(isinstance(self.half_cell, bool), "objective.half_cell", "true or false",
                 self.half_cell)
        # the cell model scores a lithium-metal half cell in mAh/g at a C-rate only, and a
        # full cell in Wh/L or Wh/kg (it reports no mAh/g for a full cell)
        if self.half_cell:
            _require(self.kind == "capacity_mAh_g", "objective.kind",
                     "'capacity_mAh_g' for a half cell (objective.half_cell = true)", self.kind)
            _require(self.c_rate is not None, "objective.c_rate",
                     "set for a half cell (a half cell is discharged at a C-rate, not a power)",
                     self.c_rate)
        else:
            _require(self.kind != "capacity_mAh_g", "objective.kind",
                     "'energy_density_Wh_L' or 'specific_energy_Wh_kg' for a full cell "
                     "('capacity_mAh_g' needs objective.half_cell = true)", self.kind)


@dataclass
class CellSpec:
    """The cell the electrode is scored in. The cathode thickness comes from, in order:
    `mass_loading_mg_cm2` in the design params, `mass_loading_mg_cm2` here, `thickness_um` here."""

    parameter_set: str = "Chen2020"
    packaging: dict[str, float] = field(default_factory=dict)   # Packaging4680 field overrides
    thickness_um: float = 75.6                                   # Chen2020's positive electrode
    mass_loading_mg_cm2: float | None = None
    ragone_powers_W: list[float] = field(default_factory=list)
    # the content of a calibration file (kernels.cell.calibration.Calibration.to_dict), or None
    calibration: dict[str, Any] | None = None

    def validate(self) -> None:
        from kernels.cell.calibration import Calibration
        from kernels.cell.geometry_4680 import Packaging4680

        _require(isinstance(self.parameter_set, str) and self.parameter_set != "",
                 "cell.parameter_set", "a PyBaMM parameter set name such as 'Chen2020'",
                 self.parameter_set)
        _require(isinstance(self.packaging, dict), "cell.packaging",
                 "a table of Packaging4680 values", self.packaging)
        for key, value in self.packaging.items():
            _require(_is_number(value), f"cell.packaging.{key}", "a number", value)
        try:
            Packaging4680.from_dict(self.packaging)
        except (TypeError, ValueError) as error:
            raise ValueError(f"cell.packaging: {error}") from None
        if self.calibration is not None:
            try:
                Calibration.from_dict(self.calibration)
            except (TypeError, ValueError) as error:
                raise ValueError(f"cell.calibration: {error}") from None
        _require(_is_number(self.thickness_um) and 1 <= self.thickness_um <= 1000,
                 "cell.thickness_um", "a number in [1, 1000] (micrometres)", self.thickness_um)
        _require(self.mass_loading_mg_cm2 is None
                 or (_is_number(self.mass_loading_mg_cm2) and self.mass_loading_mg_cm2 > 0),
                 "cell.mass_loading_mg_cm2", "a number > 0 (mg/cm^2) or omitted",
                 self.mass_loading_mg_cm2)
        _require(isinstance(self.ragone_powers_W, list)
                 and all(_is_number(p) and 0 < p <= MAX_POWER_W for p in self.ragone_powers_W),
                 "cell.ragone_powers_W", f"a list of numbers in (0, {MAX_POWER_W:g}] (watts per cell)",
                 self.ragone_powers_W)


@dataclass
class EvaluationSpec:
    """Everything fixed across a campaign's evaluations; the design params vary per trial."""

    fidelity: FidelitySpec = field(default_factory=FidelitySpec)
    generator: GeneratorSpec = field(default_factory=GeneratorSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    cell: CellSpec = field(default_factory=CellSpec)
    seed: int = 0

    def validate(self) -> None:
        self.fidelity.validate()
        self.generator.validate()
        self.objective.validate()
        self.cell.validate()
        _require(not (self.objective.half_cell and self.cell.ragone_powers_W),
                 "cell.ragone_powers_W", "empty for a half cell (constant-power sweeps need a "
                 "full cell)", self.cell.ragone_powers_W)
        _require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
                 "seed", "an integer >= 0", self.seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; `from_dict(to_dict())` gives an equal spec."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | EvaluationSpec) -> EvaluationSpec:
        """Build and validate a spec from a dict (missing sections/keys take the defaults)."""
        if isinstance(data, EvaluationSpec):
            data.validate()
            return data
        if not isinstance(data, dict):
            raise ValueError(f"spec must be a dict, got {type(data).__name__}")
        known = {"fidelity", "generator", "objective", "cell", "seed"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"spec: unknown key(s) {unknown}; accepted keys: {sorted(known)}")
        spec = cls(
            fidelity=_from_dict(FidelitySpec, data.get("fidelity"), "fidelity"),
            generator=_from_dict(GeneratorSpec, data.get("generator"), "generator"),
            objective=_from_dict(ObjectiveSpec, data.get("objective"), "objective"),
            cell=_from_dict(CellSpec, data.get("cell"), "cell"),
            seed=data.get("seed", 0),
        )
        spec.cell.ragone_powers_W = list(spec.cell.ragone_powers_W)
        spec.validate()
        return spec


def validate_params(params: dict[str, float]) -> dict[str, float]:
    """Check the design params of one trial; returns them as plain floats.

    `am_wt_frac` and `porosity` are required (the controller merges fixed values in);
    `binder_adhesion` and `mass_loading_mg_cm2` are optional. Physical ranges are checked by
    `kernels.structure.procedural.ManufacturingParams.validate` when the structure is built.
    """
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if unknown:
        raise ValueError(f"params: unknown key(s) {unknown}; accepted keys: {list(PARAM_KEYS)}")
    missing = [key for key in REQUIRED_PARAM_KEYS if key not in params]
    if missing:
        raise ValueError(f"params: missing key(s) {missing}; required: {list(REQUIRED_PARAM_KEYS)}")
    out: dict[str, float] = {}
    for key, value in params.items():
        _require(_is_number(value), f"params.{key}", "a finite number", value)
        out[key] = float(value)
    if "mass_loading_mg_cm2" in out:
        _require(out["mass_loading_mg_cm2"] > 0, "params.mass_loading_mg_cm2",
                 "a number > 0 (mg/cm^2)", out["mass_loading_mg_cm2"])
    return out


def read_job_inputs(spec_path: str, params_path: str) -> tuple[EvaluationSpec, dict[str, float]]:
    """The spec and design params of a `python -m jobs.*` program, from their JSON files;
    ValueError (or OSError) with the reason, so the program can exit 2 before any work."""
    import json
    from pathlib import Path

    spec = EvaluationSpec.from_dict(json.loads(Path(spec_path).read_text()))
    params = validate_params(json.loads(Path(params_path).read_text()))
    return spec, params
