"""What one design evaluation needs to know, as plain dataclasses that travel as JSON.

`hpc.campaign.config` builds an `EvaluationSpec` from the campaign file; the spec is then written next to
each trial (``trials/<id>/spec.json``) so that every job (an array task, an MPI rank started by
``mpiexec``, a Dask worker) reads the same values. Every check raises ``ValueError`` naming the
field and the accepted values, before any work is done. Physical ranges are not written here:
they come from `kernels.cell.ranges`, so the spec accepts exactly what the stages accept.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from kernels.cell import ranges
from kernels.cell.design import thickness_range_um

OBJECTIVE_KINDS = ("energy_density_Wh_L", "specific_energy_Wh_kg", "capacity_mAh_g")
PARAM_KEYS = tuple(ranges.DESIGN_PARAMETERS)
REQUIRED_PARAM_KEYS = ("am_wt_frac", "porosity")
PROCEDURAL = "procedural"
MAX_POWER_W = ranges.POWER_W.high   # the cell model's upper power per 4680 cell
DEFAULT_MODEL = "default"   # the trained generator shipped with microloop


def _require(ok: bool, name: str, accepted: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {accepted}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


@dataclass(frozen=True)
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
        _require(_is_int(self.n_cubes) and self.n_cubes >= 1,
                 "fidelity.n_cubes", "an integer >= 1", self.n_cubes)
        ranges.CUBE_VOXELS.check(self.cube_voxels, "fidelity.cube_voxels")
        ranges.VOXEL_UM.check(self.voxel_um, "fidelity.voxel_um")
        _require(isinstance(self.backend, str) and self.backend != "",
                 "fidelity.backend", "a solver back-end name such as 'taufactor' or 'native'",
                 self.backend)
        _require(_is_number(self.rel_tol) and 0 < self.rel_tol < 1,
                 "fidelity.rel_tol", "a number in (0, 1)", self.rel_tol)
        for name in ("conductivity_am_S_m", "conductivity_cbd_S_m"):
            value = getattr(self, name)
            _require(value is None or (_is_number(value) and value > 0),
                     f"fidelity.{name}", "a number > 0 in S/m, or omitted for the default", value)
        _require(_is_int(self.mpi_ranks) and self.mpi_ranks >= 1,
                 "fidelity.mpi_ranks", "an integer >= 1", self.mpi_ranks)


@dataclass(frozen=True)
class GeneratorSpec:
    """Where voxels come from: the procedural simulator, the shipped trained model ("default")
    or a trained model file (a path). The mean diameter/spread apply to the procedural one."""

    kind: str = PROCEDURAL
    mean_diameter_um: float = 8.0
    diameter_spread: float = 0.25
    # how the structures are calendered: "rearrange" (round particles) or "flatten" (oblate);
    # None: the generator's own (ranges.DEFAULT_CALENDERING for the procedural simulator, what
    # a trained model's procedural training volumes used; a given value must equal the model's)
    calendering: str | None = None

    def validate(self) -> None:
        _require(isinstance(self.kind, str) and self.kind != "",
                 "generator.kind",
                 f"'{PROCEDURAL}', '{DEFAULT_MODEL}' (the shipped model) or a model file path",
                 self.kind)
        ranges.MEAN_DIAMETER_UM.check(self.mean_diameter_um, "generator.mean_diameter_um")
        ranges.DIAMETER_SPREAD.check(self.diameter_spread, "generator.diameter_spread")
        _require(self.calendering is None or self.calendering in ranges.CALENDERING_MODELS,
                 "generator.calendering",
                 f"one of {list(ranges.CALENDERING_MODELS)}, or omitted for the generator's own",
                 self.calendering)

    @property
    def is_procedural(self) -> bool:
        return self.kind == PROCEDURAL

    @property
    def procedural_calendering(self) -> str:
        """The calendering model the procedural simulator runs with."""
        return ranges.DEFAULT_CALENDERING if self.calendering is None else self.calendering


@dataclass(frozen=True)
class ObjectiveSpec:
    """The number the optimiser maximises: one cell quantity at one power or one C-rate."""

    kind: str = "energy_density_Wh_L"
    power_W: float | None = 10.0
    c_rate: float | None = None
    half_cell: bool = False
    # also score every sample on its own: the spread of the per-sample objective is the design's
    # known observation noise for the optimiser (one more discharge per sample)
    noise_from_samples: bool = False
    # the fraction of a design's cubes whose pore AND solid phases must both percolate for the
    # design to be scored; below it the design is infeasible (1.0: every cube)
    min_percolating_fraction: float = 1.0
    # more objectives (multi-objective campaigns): each {"kind", "power_W" | "c_rate"}, scored
    # by one more discharge of the same cell (same half_cell) at its operating point
    also: list = field(default_factory=list)
    # outcome constraints: each {"kind", "power_W" | "c_rate", "min" | "max"}
    constraints: list = field(default_factory=list)

    def validate_with_prefix(self, where: str) -> None:
        """Validate, naming the field `where` (an extra objective or constraint) on error."""
        try:
            self.validate()
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def validate(self) -> None:
        for where, entries, bound in (("objective.also", self.also, False),
                                      ("objective.constraints", self.constraints, True)):
            _require(isinstance(entries, list), where, "a list of tables", entries)
            for i, entry in enumerate(entries):
                _validate_outcome(entry, f"{where}[{i}]", self.half_cell, bound)
        _require(isinstance(self.noise_from_samples, bool), "objective.noise_from_samples",
                 "true or false", self.noise_from_samples)
        _require(self.kind in OBJECTIVE_KINDS, "objective.kind", f"one of {list(OBJECTIVE_KINDS)}",
                 self.kind)
        _require((self.power_W is None) != (self.c_rate is None), "objective.power_W/c_rate",
                 "exactly one of power_W (W per cell) or c_rate set",
                 {"power_W": self.power_W, "c_rate": self.c_rate})
        if self.power_W is not None:
            ranges.POWER_W.check(self.power_W, "objective.power_W")
        if self.c_rate is not None:
            ranges.C_RATE.check(self.c_rate, "objective.c_rate")
        ranges.MIN_PERCOLATING_FRACTION.check(self.min_percolating_fraction,
                                              "objective.min_percolating_fraction")
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


def _validate_outcome(entry: Any, where: str, half_cell: bool, bound: bool) -> None:
    """One extra objective or outcome constraint: a kind at one operating point (and, for a
    constraint, exactly one of min or max)."""
    keys = {"kind", "power_W", "c_rate"} | ({"min", "max"} if bound else set())
    _require(isinstance(entry, dict) and set(entry) <= keys, where,
             f"a table with keys from {sorted(keys)}", entry)
    ObjectiveSpec(kind=entry.get("kind", ""), power_W=entry.get("power_W"),
                  c_rate=entry.get("c_rate"), half_cell=half_cell).validate_with_prefix(where)
    if bound:
        limits = [k for k in ("min", "max") if entry.get(k) is not None]
        _require(len(limits) == 1 and _is_number(entry[limits[0]]), f"{where}.min/max",
                 "exactly one of min or max, a finite number", entry)


@dataclass(frozen=True)
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
    # the cell model's modelling choices (kernels.cell.options.cell_model_options); {} = defaults
    model_options: dict[str, Any] = field(default_factory=dict)

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
        from kernels.cell.options import cell_model_options

        cell_model_options(self.model_options)
        if self.calibration is not None:
            _require(isinstance(self.calibration, dict), "cell.calibration",
                     "the table of a calibration file (from `microloop calibrate`)",
                     type(self.calibration).__name__)
            try:
                Calibration.from_dict(self.calibration)
            except (TypeError, ValueError) as error:
                raise ValueError(f"cell.calibration: {error}") from None
        ranges.THICKNESS_UM.check(self.thickness_um, "cell.thickness_um")
        if self.mass_loading_mg_cm2 is not None:
            ranges.MASS_LOADING_MG_CM2.check(self.mass_loading_mg_cm2, "cell.mass_loading_mg_cm2")
        _require(isinstance(self.ragone_powers_W, list), "cell.ragone_powers_W",
                 f"a list of powers, each {ranges.POWER_W.describe()}", self.ragone_powers_W)
        for index, power in enumerate(self.ragone_powers_W):
            ranges.POWER_W.check(power, f"cell.ragone_powers_W[{index}]")


@dataclass(frozen=True)
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
        _require(_is_int(self.seed) and self.seed >= 0,
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
        cell = data.get("cell")
        if isinstance(cell, dict) and isinstance(cell.get("ragone_powers_W"), tuple):
            cell = {**cell, "ragone_powers_W": list(cell["ragone_powers_W"])}
        spec = cls(
            fidelity=_from_dict(FidelitySpec, data.get("fidelity"), "fidelity"),
            generator=_from_dict(GeneratorSpec, data.get("generator"), "generator"),
            objective=_from_dict(ObjectiveSpec, data.get("objective"), "objective"),
            cell=_from_dict(CellSpec, cell, "cell"),
            seed=data.get("seed", 0),
        )
        spec.validate()
        return spec


def validate_params(params: dict[str, float],
                    spec: EvaluationSpec | None = None) -> dict[str, float]:
    """Check the design params of one trial; returns them as plain floats.

    `am_wt_frac` and `porosity` are required (the controller merges fixed values in);
    `binder_adhesion` and `mass_loading_mg_cm2` are optional. Each must lie in its range of
    `kernels.cell.ranges.DESIGN_PARAMETERS`, and the cathode thickness a mass loading gives
    (from the params, else from `spec.cell`) in `ranges.THICKNESS_UM`, so a trial the cell model
    would refuse fails here, before generation.
    """
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if unknown:
        raise ValueError(f"params: unknown key(s) {unknown}; accepted keys: {list(PARAM_KEYS)}")
    missing = [key for key in REQUIRED_PARAM_KEYS if key not in params]
    if missing:
        raise ValueError(f"params: missing key(s) {missing}; required: {list(REQUIRED_PARAM_KEYS)}")
    out = {key: ranges.DESIGN_PARAMETERS[key].check(value, f"params.{key}")
           for key, value in params.items()}
    loading = out.get("mass_loading_mg_cm2",
                      None if spec is None else spec.cell.mass_loading_mg_cm2)
    if loading is not None:
        thickness, _ = thickness_range_um((out["am_wt_frac"],) * 2, (out["porosity"],) * 2,
                                                 (loading,) * 2)
        if not ranges.THICKNESS_UM.contains(thickness):
            raise ValueError(
                f"params.mass_loading_mg_cm2 = {loading} with am_wt_frac {out['am_wt_frac']} and "
                f"porosity {out['porosity']} gives a cathode {thickness:.1f} um thick, outside "
                f"the cell model's thickness_um range {ranges.THICKNESS_UM.interval_text()}")
    return out


def read_job_inputs(spec_path: str, params_path: str) -> tuple[EvaluationSpec, dict[str, float]]:
    """The spec and design params of a `python -m jobs.*` program, from their JSON files;
    ValueError (or OSError) with the reason, so the program can exit 2 before any work."""
    import json
    from pathlib import Path

    spec = EvaluationSpec.from_dict(json.loads(Path(spec_path).read_text()))
    params = validate_params(json.loads(Path(params_path).read_text()), spec)
    return spec, params
