"""The campaign file (TOML) as validated pydantic models.

One file describes a whole campaign: what varies, what is scored, how finely, with which optimiser
and on which machines. Everything is checked here, before any job is submitted, and every error
names the key as a dotted path (``space.porosity``) together with what is accepted.

Types are strict (``budget = "4"``, ``half_cell = "yes"`` or ``binder_adhesion = true`` are errors,
not coerced), numbers must be finite, and every physical range is the one of
`kernels.cell.ranges`, which the evaluation stages use too: what this file accepts, they accept.
"""

from __future__ import annotations

import functools
import json
import math
import pickle
import re
import tomllib
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hpc.campaign.resources_config import (
    MAX_CONSECUTIVE_REFUSALS,
    SLURM_NAME,
    RoleResources,
    slurm_name,
)
from hpc.campaigns import builtin_names
from kernels.cell import ranges
from kernels.cell.design import thickness_range_um
from kernels.cell.ranges import PhysicalRange

#: every campaign file shipped in hpc/campaigns (quick, cs1, cs1_3C, ...), read from the package
BUILTIN_CAMPAIGNS = builtin_names("campaign")

#: The manufacturing parameters a campaign may vary, with their physical ranges and units
#: (views of kernels.cell.ranges.DESIGN_PARAMETERS).
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    name: r.bounds for name, r in ranges.DESIGN_PARAMETERS.items()}
UNITS = {name: r.unit for name, r in ranges.DESIGN_PARAMETERS.items()}
#: the voxel size of the procedural simulator when [fidelity] voxel_um is not given
PROCEDURAL_VOXEL_UM = 1.0
#: the campaign name becomes a folder name (runs/<name>-<time>), a SLURM job name and a plot title
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")

OBJECTIVE_KINDS = ("energy_density_Wh_L", "specific_energy_Wh_kg", "capacity_mAh_g")
SOLVER_BACKENDS = ("taufactor", "native")
OPTIMIZER_BACKENDS = ("botorch", "dragonfly", "sobol", "random", "multi_fidelity")
EXECUTORS = ("local", "slurm", "debug")

# SLURM names (partition, account, option names) go into #SBATCH lines: a plain alphabet only.


class ConfigError(ValueError):
    """A campaign file that cannot be run; the message lists every offending key."""


class _Section(BaseModel):
    # strict: no coercion ("4" is not 4, true is not 1.0); allow_inf_nan: NaN/inf are refused
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_in(physical: PhysicalRange, value: Any) -> Any:
    if value is not None and not physical.contains(value):
        raise ValueError(f"got {value!r}; expected {physical.describe()}")
    return value


def in_range(physical: PhysicalRange) -> Any:
    """The pydantic type of a value that must lie in `physical` (a kernels.cell.ranges range)."""
    base = int if physical.integer else float
    return Annotated[base, AfterValidator(functools.partial(_check_in, physical))]


def _plain_path(value: str | None) -> str | None:
    """A file or folder name from the campaign file: non-empty, one line, no NUL."""
    if value is not None and (not value.strip() or any(c in value for c in "\x00\n\r")):
        raise ValueError(f"got {value!r}; expected a non-empty path on one line (no NUL)")
    return value


#: a path given in the campaign file (relative ones resolve against the file's folder)
PathText = Annotated[str, AfterValidator(_plain_path)]


def _range_text(name: str) -> str:
    physical = ranges.DESIGN_PARAMETERS[name]
    return (f"{physical.describe()} to fix it, or [low, high] inside that range to vary it")


class SpaceConfig(_Section):
    """Each parameter is a number (fixed) or ``[low, high]`` (varied by the optimiser)."""

    am_wt_frac: float | list[float] = 0.90
    porosity: float | list[float] = 0.35
    binder_adhesion: float | list[float] = 0.5
    mass_loading_mg_cm2: float | list[float] | None = None
    log_scale: list[str] = Field(default_factory=list)

    @field_validator("am_wt_frac", "porosity", "binder_adhesion", "mass_loading_mg_cm2",
                     mode="before")
    @classmethod
    def _in_physical_range(cls, value: Any, info: Any) -> Any:
        """Checked before the type, so one clear message replaces pydantic's per-branch ones."""
        if value is None:
            return value
        name = info.field_name
        physical = ranges.DESIGN_PARAMETERS[name]
        if isinstance(value, list):
            if len(value) != 2 or not all(_is_number(v) for v in value):
                raise ValueError(f"got {value!r}; expected {_range_text(name)}")
            values = value
        elif _is_number(value):
            values = [value]
        else:
            raise ValueError(f"got {value!r} ({type(value).__name__}); expected {_range_text(name)}")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"got {value!r}; every value must be finite: {_range_text(name)}")
        if isinstance(value, list) and not value[0] < value[1]:
            raise ValueError(f"got {value!r}; expected {_range_text(name)} with low < high")
        for number in values:
            if not physical.contains(number):
                raise ValueError(f"got {value!r}; expected {_range_text(name)}")
        return value

    @field_validator("log_scale")
    @classmethod
    def _known_log_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in PHYSICAL_RANGES:
                raise ValueError(f"unknown parameter {name!r}; allowed: {sorted(PHYSICAL_RANGES)}")
        return names

    @model_validator(mode="after")
    def _something_varies(self) -> SpaceConfig:
        if not self.bounds():
            raise ValueError(
                "nothing varies: give at least one of "
                f"{sorted(PHYSICAL_RANGES)} as [low, high]"
            )
        for name in self.log_scale:
            if name not in self.bounds():
                raise ValueError(
                    f"log_scale names {name!r}, which is fixed; only varied ones can be")
        return self

    def bounds(self) -> dict[str, tuple[float, float]]:
        """The varied parameters, in a fixed order."""
        return {
            name: (float(getattr(self, name)[0]), float(getattr(self, name)[1]))
            for name in PHYSICAL_RANGES
            if isinstance(getattr(self, name), list)
        }

    def fixed(self) -> dict[str, float]:
        """The parameters held constant (mass loading only when it is given)."""
        return {
            name: float(getattr(self, name))
            for name in PHYSICAL_RANGES
            if getattr(self, name) is not None and not isinstance(getattr(self, name), list)
        }

    def to_bayes_space(self) -> Any:
        from bayes.space import Space

        return Space(self.bounds(), log_scale=list(self.log_scale), fixed=self.fixed(),
                     units={name: UNITS[name] for name in self.bounds()})


class OutcomeConfig(_Section):
    """One more cell quantity at one operating point: an extra objective (objective.also)."""

    kind: Literal["energy_density_Wh_L", "specific_energy_Wh_kg", "capacity_mAh_g"]
    power_W: in_range(ranges.POWER_W) | None = None
    c_rate: in_range(ranges.C_RATE) | None = None

    @model_validator(mode="after")
    def _one_operating_point(self) -> OutcomeConfig:
        if (self.power_W is None) == (self.c_rate is None):
            raise ValueError("give exactly one of power_W (W per cell, > 0) or c_rate (> 0)")
        return self

    def label(self) -> str:
        at = f"{self.power_W:g} W" if self.power_W is not None else f"{self.c_rate:g}C"
        return f"{self.kind} at {at}"


class OutcomeConstraintConfig(OutcomeConfig):
    """A cell quantity that must stay above ``min`` or below ``max`` (e.g. Wh/kg >= 250)."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> OutcomeConstraintConfig:
        bounds = [b for b in (self.min, self.max) if b is not None]
        if len(bounds) != 1 or not math.isfinite(bounds[0]):
            raise ValueError("give exactly one of min or max (a finite number)")
        return self


class ObjectiveConfig(_Section):
    """What the optimiser maximises: a 4680-cell score at one operating point (and, for a
    Pareto front, more of them in ``also``; outcome constraints in ``constraints``)."""

    kind: Literal["energy_density_Wh_L", "specific_energy_Wh_kg", "capacity_mAh_g"] = (
        "energy_density_Wh_L"
    )
    power_W: in_range(ranges.POWER_W) | None = None
    c_rate: in_range(ranges.C_RATE) | None = None
    half_cell: bool = False
    #: score each sample on its own and tell the optimiser the variance of the mean as known noise
    noise_from_samples: bool = False
    #: the fraction of a design's cubes whose pore and solid phases must both percolate for the
    #: design to be scored; below it the design is infeasible
    min_percolating_fraction: in_range(ranges.MIN_PERCOLATING_FRACTION) = 1.0
    #: more objectives, all maximised with the first: the optimiser finds their Pareto front
    also: list[OutcomeConfig] = Field(default_factory=list)
    #: outcome constraints, e.g. [{kind = "specific_energy_Wh_kg", power_W = 10, min = 250}]
    constraints: list[OutcomeConstraintConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_operating_point(self) -> ObjectiveConfig:
        if (self.power_W is None) == (self.c_rate is None):
            raise ValueError("give exactly one of power_W (W per cell, > 0) or c_rate (> 0)")
        return self

    @property
    def n_outcomes(self) -> int:
        """Numbers told per design: the objectives, then the constrained outcomes."""
        return 1 + len(self.also) + len(self.constraints)

    def label(self) -> str:
        at = f"{self.power_W:g} W" if self.power_W is not None else f"{self.c_rate:g}C"
        return f"{self.kind} at {at}"


class GeneratorConfig(_Section):
    """Where microstructures come from: the procedural simulator, the shipped trained model
    ("default") or a trained model file (kind = "model" with model_path)."""

    kind: Literal["procedural", "default", "model"] = "procedural"
    model_path: PathText | None = None
    mean_diameter_um: in_range(ranges.MEAN_DIAMETER_UM) = 8.0
    diameter_spread: in_range(ranges.DIAMETER_SPREAD) = 0.25
    #: how the structures are calendered (kernels.cell.ranges.CALENDERING_MODELS): "rearrange"
    #: (round particles, packing compressed) or "flatten" (oblate particles). None: the
    #: generator's own, filled in by parse_campaign: ranges.DEFAULT_CALENDERING for the
    #: simulator, what a trained model's procedural volumes used (a different value is an error)
    calendering: Literal[ranges.CALENDERING_MODELS] | None = None

    @model_validator(mode="after")
    def _model_needs_path(self) -> GeneratorConfig:
        if self.kind == "model" and not self.model_path:
            raise ValueError("kind = 'model' needs model_path = 'path/to/generator.pt'")
        if self.kind != "model" and self.model_path:
            raise ValueError("model_path is only used with kind = 'model'")
        return self


#: Default cost of one evaluation at a fidelity level, CPU-s: a job's fixed start-up and cell
#: model (~5 CPU-s) plus ~1.9 CPU-s per 128^3 cube, linear in voxels (docs/optimisers.md).
FIXED_EVALUATION_CPU_S = 5.0
CUBE_128_CPU_S = 1.9


class FidelityLevel(_Section):
    """One fidelity a multi-fidelity campaign may evaluate a design at."""

    n_cubes: int = Field(ge=1, le=4096)
    cube_voxels: in_range(ranges.CUBE_VOXELS)
    #: relative cost of one evaluation here (any unit, the same for every level); None: the
    #: estimate FIXED_EVALUATION_CPU_S + CUBE_128_CPU_S * n_cubes * (cube_voxels / 128)^3
    cost: float | None = Field(default=None, gt=0)

    @property
    def cost_estimate(self) -> float:
        if self.cost is not None:
            return self.cost
        return FIXED_EVALUATION_CPU_S + CUBE_128_CPU_S * self.n_cubes * (self.cube_voxels / 128) ** 3


class FidelityConfig(_Section):
    """How finely each design is characterised: sub-volumes, their size and the solver.

    With `levels` (cheapest first, >= 2) the campaign is multi-fidelity: the optimiser
    (backend "multi_fidelity") picks each evaluation's level; n_cubes and cube_voxels are the
    top level's (filled in from it when not given)."""

    n_cubes: int = Field(default=2, ge=1, le=4096)
    cube_voxels: in_range(ranges.CUBE_VOXELS) = 32
    #: None: the trained generator's own voxel size, or PROCEDURAL_VOXEL_UM for the simulator
    #: (parse_campaign fills it in; a value that differs from a trained model's is an error)
    voxel_um: in_range(ranges.VOXEL_UM) | None = None
    backend: Literal["taufactor", "native"] = "native"
    rel_tol: float = Field(default=1e-3, gt=0, le=0.1)
    conductivity_am_S_m: float | None = Field(default=None, gt=0)
    conductivity_cbd_S_m: float | None = Field(default=None, gt=0)
    mpi_ranks: int = Field(default=1, ge=1, le=4096)
    #: a `microloop convergence` study folder: its recommended cube size and count (and voxel
    #: size) become n_cubes, cube_voxels and voxel_um (see apply_convergence_recommendation)
    from_convergence: PathText | None = None
    #: multi-fidelity levels, cheapest first; the last one is the top (target) fidelity
    levels: list[FidelityLevel] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _top_level_is_the_fidelity(cls, data: Any) -> Any:
        """n_cubes/cube_voxels default to the top level's; giving other values is an error, so
        the memory check and the warm-start context see the dearest evaluation."""
        if not isinstance(data, dict) or not isinstance(data.get("levels"), list) \
                or not data["levels"] or not isinstance(data["levels"][-1], dict):
            return data
        top = data["levels"][-1]
        for key in ("n_cubes", "cube_voxels"):
            if key in data and key in top and data[key] != top[key]:
                raise ValueError(f"{key} = {data[key]!r} but the top (last) of levels has "
                                 f"{key} = {top[key]!r}: remove {key} or make them agree")
        return {**data, **{k: top[k] for k in ("n_cubes", "cube_voxels") if k in top}}

    @model_validator(mode="after")
    def _levels_ordered(self) -> FidelityConfig:
        if len(self.levels) == 1:
            raise ValueError("levels needs at least two entries (cheapest first, top last); "
                             "for one fidelity set n_cubes and cube_voxels instead")
        costs = [level.cost_estimate for level in self.levels]
        if any(b <= a for a, b in zip(costs, costs[1:], strict=False)):
            raise ValueError(f"levels must be ordered by increasing cost (cheapest first, top "
                             f"last); their costs are {costs}")
        return self

    @property
    def level_costs(self) -> list[float]:
        return [level.cost_estimate for level in self.levels]


class CellConfig(_Section):
    """The 4680 cell the electrode is scored in."""

    parameter_set: str = "Chen2020"
    packaging: dict[str, float] = Field(default_factory=dict)
    #: used when space.mass_loading_mg_cm2 is not given; None = the parameter set's (Chen2020 75.6)
    thickness_um: in_range(ranges.THICKNESS_UM) | None = None
    ragone_powers_W: list[in_range(ranges.POWER_W)] = Field(default_factory=list)
    #: a calibration file written by `microloop calibrate` (path, relative to the campaign file)
    calibration: PathText | None = None
    #: the cell model's modelling choices (kernels.cell.options.CellModelOptions fields, e.g.
    #: radius_rule = "legacy_3phi_over_a_eff"); `preset = "legacy"` starts from the pre-issue-15
    #: model. Empty: the documented defaults (docs/cell-model.md).
    model_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model_options")
    @classmethod
    def _known_model_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        from kernels.cell.options import cell_model_options

        cell_model_options(value)  # ValueError names the option and the accepted values
        return value


class OptimizerConfig(_Section):
    """The Bayesian optimiser and how many evaluations it may spend."""

    #: "multi_fidelity" needs [fidelity] levels (bayes/multi_fidelity.py)
    backend: Literal["botorch", "dragonfly", "sobol", "random", "multi_fidelity"] = "botorch"
    n_initial: int = Field(default=4, ge=1, le=100000)
    budget: int = Field(default=8, ge=1, le=1000000)
    max_concurrent: int = Field(default=2, ge=1, le=100000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    #: "async": refill each free slot at once (fastest). "sync": propose a new batch only when
    #: the previous one is done and tell results in trial order, so the same seed gives the same
    #: campaign on any executor.
    mode: Literal["async", "sync"] = "async"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _initial_within_budget(cls, data: Any) -> Any:
        """An initial design larger than the budget is capped at the budget (e.g. --budget 2)."""
        budget = data.get("budget") if isinstance(data, dict) else None
        if isinstance(budget, int) and not isinstance(budget, bool):
            n_initial = data.get("n_initial", 4)
            if (isinstance(n_initial, int) and not isinstance(n_initial, bool)
                    and n_initial > budget >= 1):
                data = {**data, "n_initial": data["budget"]}
        return data


#: sbatch options a campaign may not set (and why / what to set instead): submitit writes the
#: job's logs, results and array itself; a user value would send them out of the folder
#: (output, error), replace the job (wrap), or break the one-task-per-trial bookkeeping.
REFUSED_SBATCH_OPTIONS: dict[str, str] = {
    "output": "logs go to jobs/", "error": "logs go to jobs/", "input": "jobs read no stdin",
    "open-mode": "submitit appends to its own logs", "chdir": "jobs run in the campaign's cwd",
    "wrap": "the job runs the evaluation", "array": "one array task per trial",
    "parsable": "submitit parses sbatch's answer", "job-name": "set by the campaign name",
    "time": "use resources.walltime_min", "mem": "use resources.mem_gb",
    "mem-per-cpu": "use resources.mem_gb", "cpus-per-task": "use resources.cpus_per_task",
    "partition": "use resources.partition", "account": "use resources.account",
    "gpus-per-node": "use resources.gpus_per_task", "signal": "set for the walltime requeue",
    "comment": "carries the submission tag a resumed controller finds its queued jobs by",
}


class ResourcesConfig(_Section):
    """Where the evaluations run and what each one may use."""

    executor: Literal["local", "slurm", "debug"] = "local"
    partition: str | None = None
    account: str | None = None
    gpus_per_task: int = Field(default=0, ge=0, le=64)
    cpus_per_task: int = Field(default=1, ge=1, le=1024)
    mpi_ranks_per_task: int | None = Field(default=None, ge=1, le=4096)
    mem_gb: float = Field(default=4.0, gt=0, le=4096)
    walltime_min: int = Field(default=60, ge=1, le=60 * 24 * 30)
    dask_workers: int = Field(default=1, ge=0, le=10000)
    # SLURM: the Dask pool adapts between dask_workers and this many worker jobs (None: fixed)
    dask_workers_max: int | None = Field(default=None, ge=1, le=10000)
    dask_memory_gb: float = Field(default=2.0, gt=0, le=4096)
    dask_interface: str | None = None
    max_retries: int = Field(default=2, ge=0, le=100)
    # executor = "local": fork every job from one process per campaign that imported the stages
    # and ran one warm-up evaluation (hpc/machine/scheduler/fork_server.py); false: a fresh
    # Python process per job (~3 CPU-s of start-up each; docs/jobs.md). Unset: true on local.
    persistent_worker: bool | None = None
    poll_interval_s: float = Field(default=1.0, gt=0, le=600)
    sbatch_options: dict[str, str] = Field(default_factory=dict)
    controller_walltime_min: int = Field(default=24 * 60, ge=1, le=60 * 24 * 30)
    controller_cpus: int = Field(default=2, ge=1, le=1024)
    # `microloop submit`: SLURM signals the controller job this long before its walltime; it
    # then requeues itself. Must leave time for the signal (SLURM sends it up to ~30 s late).
    controller_requeue_signal_s: int = Field(default=300, ge=10, le=3600)
    # an ended job's result file may appear this much later on a shared file system (NFS)
    result_grace_s: float = Field(default=5.0, ge=0, le=3600)
    # permanent sbatch refusals in a row (none accepted between them) after which the controller
    # stops the campaign with sbatch's message instead of failing trial after trial
    max_consecutive_refusals: int = Field(default=MAX_CONSECUTIVE_REFUSALS, ge=1, le=1000)
    # resources per role (hpc.campaign.resources_config: what each inherits from the keys above)
    controller: RoleResources = Field(default_factory=RoleResources)
    evaluation: RoleResources = Field(default_factory=RoleResources)
    dask: RoleResources = Field(default_factory=RoleResources)

    @model_validator(mode="after")
    def _signal_before_walltime(self) -> ResourcesConfig:
        walltime_min = self.controller.walltime_min or self.controller_walltime_min
        if self.controller_requeue_signal_s >= 60 * walltime_min:
            raise ValueError(
                f"controller_requeue_signal_s = {self.controller_requeue_signal_s} must be below "
                f"the controller's walltime, {walltime_min} min ({60 * walltime_min} s)"
            )
        if self.persistent_worker and self.executor != "local":
            raise ValueError(
                f"persistent_worker = true needs executor = 'local' (got {self.executor!r}): "
                "a SLURM array task is its own allocation, and the debug executor runs jobs "
                "in the controller; set persistent_worker = false")
        if self.dask_workers_max is not None and self.dask_workers_max < self.dask_workers:
            raise ValueError(f"dask_workers_max = {self.dask_workers_max} is below "
                             f"dask_workers = {self.dask_workers} (the pool's minimum)")
        if self.evaluation.gres and self.gpus_per_task:
            raise ValueError(
                f"gpus_per_task = {self.gpus_per_task} and evaluation.gres = "
                f"{self.evaluation.gres!r} both ask for GPUs; set one of them"
            )
        return self

    @property
    def forks_jobs(self) -> bool:
        """Whether evaluations fork from a persistent worker (`persistent_worker`, which is
        true by default on the local executor)."""
        if self.persistent_worker is None:
            return self.executor == "local"
        return self.persistent_worker

    @field_validator("partition", "account", "dask_interface")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        return slurm_name(value)

    @field_validator("sbatch_options")
    @classmethod
    def _plain_options(cls, options: dict[str, str]) -> dict[str, str]:
        refused = sorted(set(options) & set(REFUSED_SBATCH_OPTIONS))
        if refused:
            raise ValueError(
                f"refused: {', '.join(refused)}; microloop sets these itself (logs and results "
                "stay in the campaign folder's jobs/, one task per trial): "
                + "; ".join(f"{key}: {REFUSED_SBATCH_OPTIONS[key]}" for key in refused))
        for key, value in options.items():
            if not re.match(r"^[a-z][a-z0-9\-]*$", key):
                raise ValueError(f"option name {key!r}: use sbatch's long option names, e.g. 'qos'")
            if not SLURM_NAME.match(str(value)):
                raise ValueError(
                    f"{key} = {value!r}: allowed characters: letters, digits and "
                    "_ . - , : = + / @ %"
                )
        return options


class WarmStartConfig(_Section):
    """Earlier campaign folders, and observations files written by `microloop export`, whose
    observations seed the optimiser when their context matches (hpc/campaign/warm_start.py).
    ``allow`` accepts named differences: "fidelity", "generator", "power", "c_rate" (their
    values are told as they are). ``mode`` says what happens to a source that differs in one of
    those and is not allowed: "refuse" (the default: skipped, with the reason) or "prior_mean"
    (modelled: its surrogate becomes the prior mean of this campaign's GP with a learned scale
    and offset, bayes/transfer.py; needs the ``botorch`` back-end). ``n_initial``: the initial
    design of a campaign with such a source (the sources' best designs, then Sobol points)."""

    campaigns: list[PathText] = Field(default_factory=list)
    from_file: list[PathText] = Field(default_factory=list)
    allow: list[Literal["fidelity", "generator", "power", "c_rate"]] = Field(default_factory=list)
    mode: Literal["refuse", "prior_mean"] = "refuse"
    n_initial: int = Field(default=2, ge=1)

    @field_validator("from_file", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class FaultConfig(_Section):
    """Testing only: make the first ``attempts`` attempts of one trial fail ("raise", "kill"), or
    hold them ``delay_s`` seconds before evaluating ("delay"), to exercise retries, cancellation
    and preemption whatever the machine's speed."""

    trial_id: int = Field(ge=0)
    attempts: int = Field(default=1, ge=1)
    mode: Literal["raise", "kill", "delay"] = "raise"
    delay_s: float = Field(default=30.0, gt=0, le=3600)


class CampaignConfig(_Section):
    """A whole campaign file."""

    name: str = "campaign"
    description: str = ""
    space: SpaceConfig
    objective: ObjectiveConfig
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    cell: CellConfig = Field(default_factory=CellConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)
    faults: list[FaultConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _several_outcomes_need_botorch(self) -> CampaignConfig:
        if self.objective.n_outcomes > 1 and self.optimizer.backend != "botorch":
            raise ValueError(
                f"objective.also / objective.constraints need optimizer.backend = 'botorch' "
                f"(its multi-objective form, botorch_pareto); got {self.optimizer.backend!r}")
        if self.objective.n_outcomes > 1 and (self.warm_start.campaigns
                                              or self.warm_start.from_file):
            raise ValueError(
                "warm_start: earlier campaigns hold one objective per design; a campaign with "
                "objective.also / objective.constraints cannot be warm-started from them yet: "
                "remove warm_start.campaigns and warm_start.from_file")
        if self.warm_start.mode == "prior_mean" and (self.optimizer.backend != "botorch"
                                                     or self.fidelity.levels):
            raise ValueError(
                "warm_start.mode = 'prior_mean' models a source in the botorch back-end's GP: it "
                "needs optimizer.backend = 'botorch' and no [fidelity] levels (got backend "
                f"{self.optimizer.backend!r}{', with levels' if self.fidelity.levels else ''}); "
                "use mode = 'refuse' otherwise")
        return self

    def bayes_optimizer(self) -> tuple[str, dict[str, Any]]:
        """The bayes back-end and options this campaign's optimiser is built with: several
        objectives or outcome constraints select ``botorch_pareto`` with the objective count and
        the constraints (told after the objectives, in this order)."""
        options = dict(self.optimizer.options)
        backend = self.optimizer.backend
        objective = self.objective
        if objective.n_outcomes > 1:
            backend = "botorch_pareto"
            options.setdefault("n_objectives", 1 + len(objective.also))
            options.setdefault("outcome_constraints", [
                [">=", c.min] if c.min is not None else ["<=", c.max]
                for c in objective.constraints])
        return backend, options

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        """It names a folder, a SLURM job and a plot title: a plain slug, no path, no TeX."""
        if not NAME_PATTERN.fullmatch(name) or ".." in name:
            raise ValueError(
                f"got {name!r}; expected 1-64 characters of letters, digits and - _ . , starting "
                "with a letter or digit, with no '..' (it becomes a folder name: no path "
                "separators, spaces, '$', NUL or newline)")
        return name

    @model_validator(mode="after")
    def _thickness_or_loading(self) -> CampaignConfig:
        has_loading = self.space.mass_loading_mg_cm2 is not None
        if has_loading and self.cell.thickness_um is not None:
            raise ValueError(
                "cell.thickness_um is set but space.mass_loading_mg_cm2 fixes the thickness: "
                "remove one of them"
            )
        if has_loading:
            _check_loading_thickness(self.space)
        if bool(self.fidelity.levels) != (self.optimizer.backend == "multi_fidelity"):
            raise ValueError(
                "fidelity.levels and optimizer.backend = 'multi_fidelity' go together: the "
                "multi-fidelity optimiser chooses among the levels (give both, or neither)")
        if "fidelity_costs" in self.optimizer.options:
            raise ValueError("optimizer.options.fidelity_costs: set each level's cost in "
                             "[fidelity] levels instead")
        ranks = self.resources.mpi_ranks_per_task
        if ranks is not None and ranks < self.fidelity.mpi_ranks:
            raise ValueError(
                f"resources.mpi_ranks_per_task ({ranks}) is below fidelity.mpi_ranks "
                f"({self.fidelity.mpi_ranks}): reserve at least as many ranks as are used"
            )
        return self

    # ---- derived views -------------------------------------------------------------------

    @property
    def ranks_per_task(self) -> int:
        return self.resources.mpi_ranks_per_task or self.fidelity.mpi_ranks

    def to_spec_dict(self) -> dict[str, Any]:
        """The JSON-safe `jobs.contract.spec.EvaluationSpec` dict every evaluation receives."""
        if self.fidelity.voxel_um is None:   # built without parse_campaign
            return _with_voxel_size(self, self.name).to_spec_dict()
        if self.generator.calendering is None and self.generator.kind == "procedural":
            return _with_calendering(self, self.name).to_spec_dict()
        gen = self.generator
        cell: dict[str, Any] = {
            "parameter_set": self.cell.parameter_set,
            "packaging": dict(self.cell.packaging),
            "ragone_powers_W": list(self.cell.ragone_powers_W),
        }
        if self.cell.thickness_um is not None:
            cell["thickness_um"] = self.cell.thickness_um
        if self.cell.model_options:
            cell["model_options"] = dict(self.cell.model_options)
        if self.cell.calibration is not None:
            try:
                cell["calibration"] = json.loads(Path(self.cell.calibration).read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ConfigError(f"cell.calibration: cannot read {self.cell.calibration!r} "
                                  f"as a calibration file (JSON from `microloop calibrate`): "
                                  f"{error}") from None
        spec = {
            "fidelity": self.fidelity.model_dump(exclude={"from_convergence", "levels"}),
            "generator": {
                "kind": gen.model_path if gen.kind == "model" else gen.kind,
                "mean_diameter_um": gen.mean_diameter_um,
                "diameter_spread": gen.diameter_spread,
                "calendering": gen.calendering,
            },
            "objective": self.objective.model_dump(),
            "cell": cell,
            "seed": self.optimizer.seed,
        }
        return _spec_through_jobs(spec)

    def level_spec_dict(self, level: int | None) -> dict[str, Any]:
        """The evaluation spec at one of [fidelity] levels (None: the campaign's own)."""
        spec = self.to_spec_dict()
        if level is None:
            return spec
        chosen = self.fidelity.levels[level]
        spec["fidelity"] = {**spec["fidelity"], "n_cubes": chosen.n_cubes,
                            "cube_voxels": chosen.cube_voxels}
        return _spec_through_jobs(spec)

    def to_toml_dict(self) -> dict[str, Any]:
        """The config as TOML-writable data (no None values), for the frozen campaign.toml."""
        return _drop_none(self.model_dump())


def _interval(value: float | list[float]) -> tuple[float, float]:
    return (float(value[0]), float(value[1])) if isinstance(value, list) else (float(value),) * 2


def _check_loading_thickness(space: SpaceConfig) -> None:
    """The thickness every design of the box gets from its loading, L = m / (phi_AM rho_AM),
    must be one the cell model accepts: checked at the box's corners, before any submission."""
    am, porosity = _interval(space.am_wt_frac), _interval(space.porosity)
    loading = _interval(space.mass_loading_mg_cm2)
    thinnest, thickest = thickness_range_um(am, porosity, loading)
    accepted = ranges.THICKNESS_UM
    if accepted.low <= thinnest and thickest <= accepted.high:
        return
    # the loadings that fit every (am_wt_frac, porosity) corner: L scales linearly with m
    low = loading[0] * accepted.low / thickness_range_um(am, porosity, (loading[0],) * 2)[0]
    high = loading[1] * accepted.high / thickness_range_um(am, porosity, (loading[1],) * 2)[1]
    fix = (f"keep space.mass_loading_mg_cm2 within [{low:.3g}, {high:.3g}] mg/cm2 for this box"
           if low <= high else "narrow space.am_wt_frac or space.porosity: no single loading fits")
    raise ValueError(
        f"space.mass_loading_mg_cm2: {space.mass_loading_mg_cm2} mg/cm2 with am_wt_frac "
        f"{space.am_wt_frac} and porosity {space.porosity} gives cathodes {thinnest:.1f} to "
        f"{thickest:.1f} um thick (L = m / (phi_AM rho_AM) at the box's corners), but the cell "
        f"model accepts thickness_um in {accepted.interval_text()}: {fix}")


def _spec_through_jobs(spec: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through jobs.contract.spec so a mismatch with the evaluation's contract fails here."""
    from jobs.contract.spec import EvaluationSpec

    return EvaluationSpec.from_dict(spec).to_dict()


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# ---- loading ---------------------------------------------------------------------------------


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model reached by walking field names `path` from `model` (list indices
    skipped), or None where the path leaves the models."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        is_list = bool(args) and getattr(annotation, "__origin__", None) is list
        current = args[0] if is_list else annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Walk a pydantic location to the model that rejected an extra key; return its field names."""
    current = _model_at(model, loc[:-1])
    return None if current is None else list(current.model_fields)


_BOUND_WORDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _bounds_text(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """Both bounds of a Field(ge=..., le=...) at `loc`, e.g. 'a number >= 1 and <= 4096'."""
    names = [part for part in loc if not isinstance(part, int)]
    if not names:
        return None
    owner = _model_at(model, tuple(names[:-1]))
    field = None if owner is None else owner.model_fields.get(str(names[-1]))
    if field is None:
        return None
    words = [f"{symbol} {getattr(item, key)}" for item in field.metadata
             for key, symbol in _BOUND_WORDS.items() if getattr(item, key, None) is not None]
    kind = "an integer" if field.annotation is int else "a number"
    return f"{kind} {' and '.join(words)}" if words else None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(error: ValidationError, source: str,
                            model: type[BaseModel] | None = None,
                            what: str = "campaign file") -> str:
    """One line per offending key (dotted path) saying what was given and what is accepted: the
    accepted keys for an unknown one, both bounds for a number out of range, the type for a
    value of the wrong type. `model` is the root model validated (default: CampaignConfig)."""
    model = model or CampaignConfig
    lines = [f"invalid {what} {source}:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(str(part) for part in loc) or "(top level)"
        kind = item["type"]
        if not loc and kind == "value_error":   # a cross-field check: its message names the keys
            lines.append(f"  {item['msg'].removeprefix('Value error, ')}")
            continue
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {path}: unknown key{hint}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        given = item.get("input")
        if kind == "literal_error":
            message = f"got {_shown(given)}; {message[0].lower()}{message[1:]}"
        elif kind == "missing":
            message = "required key is missing"
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            bounds = _bounds_text(model, loc)
            message = f"got {_shown(given)}; expected {bounds or message}"
        elif kind == "finite_number":
            message = f"got {_shown(given)}; expected a finite number (no nan or inf)"
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            message = (f"got {_shown(given)} ({type(given).__name__}); "
                       f"{message[0].lower()}{message[1:]} (values are not converted)")
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def resolve_campaign_path(name_or_path: str | Path) -> Path:
    """A built-in name (quick, cs1, cs2, cs3) or a path to a campaign TOML file."""
    text = str(name_or_path)
    if text in BUILTIN_CAMPAIGNS:
        path = Path(str(importlib_resources.files("hpc.campaigns") / f"{text}.toml"))
        if not path.exists():
            raise ConfigError(f"built-in campaign {text!r} is not installed (no {path.name})")
        return path
    path = Path(text)
    if path.is_dir():
        raise ConfigError(f"campaign file {text!r} cannot be read: it is a directory; give a "
                          "path to a .toml file or a built-in name (microloop campaigns list)")
    if not path.is_file():
        raise ConfigError(
            f"campaign file {text!r} not found; give a path to a .toml file or one of "
            f"{', '.join(BUILTIN_CAMPAIGNS)}"
        )
    return path


def parse_campaign(data: dict[str, Any], source: str = "<dict>",
                   base_dir: Path | None = None) -> CampaignConfig:
    """Validate campaign data; relative paths (model file, warm starts) resolve to base_dir.

    Everything the evaluations will check is checked here too (the evaluation spec is built once),
    so a campaign that passes cannot fail every trial for its configuration. Any bad input is a
    ConfigError naming the key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"invalid campaign file {source}:\n  (top level): expected a table of "
                          f"sections, got {type(data).__name__}")
    data = apply_convergence_recommendation(data, source, base_dir)
    try:
        config = CampaignConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None
    try:
        if base_dir is not None:
            config = _resolve_paths(config, base_dir)
        model_missing = (config.generator.model_path is not None
                         and not Path(config.generator.model_path).is_file())
        calibration_missing = (config.cell.calibration is not None
                               and not Path(config.cell.calibration).is_file())
    except OSError as error:   # e.g. a name longer than the file system allows
        raise ConfigError(f"invalid campaign file {source}:\n  a path in the file cannot be "
                          f"used: {error}") from None
    if model_missing:
        raise ConfigError(
            f"invalid campaign file {source}:\n  generator.model_path: file "
            f"{config.generator.model_path!r} does not exist"
        )
    if calibration_missing:
        raise ConfigError(
            f"invalid campaign file {source}:\n  cell.calibration: file "
            f"{config.cell.calibration!r} does not exist (write one with `microloop calibrate`)"
        )
    config = _with_calendering(_with_voxel_size(config, source), source)
    try:
        config.to_spec_dict()
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"invalid campaign file {source}:\n  {error}") from None
    _check_optimizer_options(config, source)
    _check_warm_start_folders(config, source)
    return config


def _check_optimizer_options(config: CampaignConfig, source: str) -> None:
    """optimizer.options checked by building the back-end dry (bayes.optimizer.validate_options),
    with n_initial as the controller passes it; skipped when there are none (no torch import)."""
    opt = config.optimizer
    if not opt.options:
        return
    from bayes.optimizer import get_backend_class, validate_options

    try:
        options = dict(opt.options)
        if "n_initial" in getattr(get_backend_class(opt.backend), "OPTIONS", {}):
            options.setdefault("n_initial", opt.n_initial)
        if config.fidelity.levels:   # multi_fidelity: the levels' costs, as the controller passes
            options["fidelity_costs"] = config.fidelity.level_costs
        validate_options(config.space.to_bayes_space(), opt.backend, opt.seed, **options)
    except ImportError as error:  # an optional back-end (dragonfly) that is not installed
        raise ConfigError(f"invalid campaign file {source}:\n  optimizer.backend: "
                          f"{opt.backend!r} cannot be imported here ({error})") from None
    except ValueError as error:
        raise ConfigError(f"invalid campaign file {source}:\n  optimizer.options: {error}"
                          ) from None


def _check_warm_start_folders(config: CampaignConfig, source: str) -> None:
    """Each warm_start.campaigns entry is a campaign folder (frozen config and journal) whose
    config reads as TOML and whose journal reads (a different space or objective is no error: it is skipped, logged)."""
    from hpc.campaign.folder import FROZEN_CONFIG, JOURNAL_NAME
    from hpc.campaign.journal import JournalError, read_journal

    for index, folder_text in enumerate(config.warm_start.campaigns):
        where = f"invalid campaign file {source}:\n  warm_start.campaigns[{index}]: {folder_text!r}"
        folder = Path(folder_text)
        frozen = folder / FROZEN_CONFIG
        try:
            if not frozen.is_file() or not (folder / JOURNAL_NAME).is_file():
                raise ConfigError(f"{where} is not a campaign folder (no {FROZEN_CONFIG} and "
                                  f"{JOURNAL_NAME}); give the folder of an earlier "
                                  "`microloop run`")
            tomllib.loads(frozen.read_text(encoding="utf-8"))
            read_journal(folder)
        except ConfigError:
            raise
        except JournalError as error:
            raise ConfigError(f"{where}: its journal is damaged: {error}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{where}: its {FROZEN_CONFIG} does not read as TOML ({error})"
                              ) from None
        except OSError as error:
            raise ConfigError(f"{where} cannot be read ({error.strerror}: {error.filename})"
                              ) from None


def trained_generator_voxel_um(kind: str, model_path: str | None = None,
                               calendering: str | None = None) -> float:
    """The voxel size (um) a trained generator was trained at, stored with its weights
    (`kernels.generator.network.GeneratorConfig.voxel_um`); ValueError if the file is no model."""
    return float(_trained_generator(kind, model_path, calendering).config.voxel_um)


def trained_generator_calendering(kind: str, model_path: str | None = None,
                                  asked: str | None = None) -> str | None:
    """The calendering model of the procedural volumes a trained generator learnt (None: it
    learnt other data), from its training metadata (`kernels.generator.model.trained_calendering`).
    kind 'default' with `asked` one of the shipped models' calenderings: that shipped model."""
    from kernels.generator import model as generator

    return generator.trained_calendering(_trained_generator(kind, model_path, asked))


def _trained_generator(kind: str, model_path: str | None = None,
                       calendering: str | None = None) -> Any:
    """The trained generator a [generator] section names (kind 'default': the shipped model of
    `calendering`, or the default one); ValueError if the file is no model."""
    from kernels.generator import model as generator

    if kind == "default":
        return generator.load_default_model(calendering)
    if model_path is None:
        raise ValueError("generator.model_path is needed for kind = 'model'")
    try:
        model = generator.load_state_bytes(Path(model_path).read_bytes())
    # the ways a file that is not a saved generator fails to load (torch.load with
    # weights_only=True, then model_from_state); each is reported with its type and message
    except (OSError, EOFError, pickle.UnpicklingError, RuntimeError, ValueError, KeyError,
            TypeError, AttributeError) as error:
        raise ValueError(f"generator.model_path: {model_path!r} is not a generator saved by "
                         f"`microloop train-generator` ({type(error).__name__}: "
                         f"{str(error)[:200]})") from None
    return model


def _generator_named(generator: Any) -> str:
    """A trained generator as the errors about it name it."""
    return ("the shipped generator (generator.kind = 'default')" if generator.kind == "default"
            else f"the generator in {generator.model_path!r}")


def _with_calendering(config: CampaignConfig, source: str) -> CampaignConfig:
    """generator.calendering filled in: the simulator's default, or what a trained generator's
    procedural training volumes used (a different value given is an error: a trained model
    samples the structures it learnt, whatever the campaign file says)."""
    generator = config.generator
    if generator.kind == "procedural":
        calendering = generator.calendering or ranges.DEFAULT_CALENDERING
    else:
        try:
            calendering = trained_generator_calendering(generator.kind, generator.model_path,
                                                        generator.calendering)
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"invalid campaign file {source}:\n  {error}") from None
        if generator.calendering is not None and generator.calendering != calendering:
            which = _generator_named(generator)
            learnt = (f"was trained on {calendering!r}-calendered volumes" if calendering
                      else "was trained on volumes from files, not the simulator")
            raise ConfigError(
                f"invalid campaign file {source}:\n  generator.calendering: "
                f"{generator.calendering!r} is not what {which} samples: it {learnt}; remove "
                "generator.calendering (the model's is used), use kind = 'procedural', or "
                f"train a model on {generator.calendering!r} volumes (`microloop "
                f"train-generator procedural --calendering {generator.calendering}`)")
    return config.model_copy(update={"generator": generator.model_copy(
        update={"calendering": calendering})})


def _with_voxel_size(config: CampaignConfig, source: str) -> CampaignConfig:
    """fidelity.voxel_um filled in: a trained generator's own (a different value given is an
    error: the metrics are per micrometre), else the simulator's default."""
    fidelity, generator = config.fidelity, config.generator
    if generator.kind == "procedural":
        voxel_um = PROCEDURAL_VOXEL_UM if fidelity.voxel_um is None else fidelity.voxel_um
    else:
        try:
            voxel_um = trained_generator_voxel_um(generator.kind, generator.model_path,
                                                  generator.calendering)
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"invalid campaign file {source}:\n  {error}") from None
        which = _generator_named(generator)
        if fidelity.voxel_um is not None and not math.isclose(fidelity.voxel_um, voxel_um,
                                                              rel_tol=1e-9):
            raise ConfigError(
                f"invalid campaign file {source}:\n  fidelity.voxel_um: {fidelity.voxel_um} um "
                f"differs from the {voxel_um} um voxels of {which}, which generates at the size it "
                "was trained at; remove fidelity.voxel_um (the model's is used) or train a model "
                "at that size")
        if not ranges.VOXEL_UM.contains(voxel_um):
            raise ConfigError(f"invalid campaign file {source}:\n  generator: {which} has "
                              f"{voxel_um} um voxels; fidelity.voxel_um must be "
                              f"{ranges.VOXEL_UM.describe()}")
    return config.model_copy(update={"fidelity": fidelity.model_copy(update={"voxel_um": voxel_um})})


def apply_convergence_recommendation(data: dict[str, Any], source: str = "<dict>",
                                     base_dir: Path | None = None) -> dict[str, Any]:
    """Fill [fidelity] n_cubes, cube_voxels and voxel_um from a convergence study's recommendation
    (`fidelity.from_convergence = "study folder"`). Giving them as well is an error unless they
    agree, so a campaign never silently runs at another fidelity than the one it names."""
    fidelity = data.get("fidelity")
    if not isinstance(fidelity, dict) or not isinstance(fidelity.get("from_convergence"), str) \
            or not fidelity["from_convergence"]:
        return data   # absent, or of the wrong type: the schema reports it
    key = "fidelity.from_convergence"
    where = f"invalid campaign file {source}:\n  {key}"
    folder = Path(fidelity["from_convergence"]).expanduser()
    if not folder.is_absolute() and base_dir is not None:
        folder = (base_dir / folder).resolve()
    summary_path, plan_path = folder / "convergence.json", folder / "study.json"
    if not summary_path.is_file() or not plan_path.is_file():
        raise ConfigError(f"{where}: {str(folder)!r} holds no finished convergence study "
                          "(run `microloop convergence ... --dir` first)")
    try:
        summary = json.loads(summary_path.read_text())
        plan = json.loads(plan_path.read_text())
        recommended = summary.get("recommended")
        if not recommended:
            raise ConfigError(f"{where}: the study in {str(folder)!r} recommends nothing (no size "
                              "met its tolerance): add larger cube sizes")
        chosen = {"n_cubes": recommended["n_cubes"], "cube_voxels": recommended["cube_voxels"],
                  "voxel_um": plan["voxel_um"]}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError,
            TypeError) as error:
        raise ConfigError(f"{where}: cannot read the study in {str(folder)!r} "
                          f"(convergence.json / study.json: {type(error).__name__}: {error})"
                          ) from None
    for name, value in chosen.items():
        if name in fidelity and fidelity[name] != value:
            raise ConfigError(f"invalid campaign file {source}:\n  fidelity.{name}: "
                              f"{fidelity[name]!r} contradicts {key} (which gives {value!r}); "
                              "remove one of them")
    return {**data, "fidelity": {**fidelity, **chosen, "from_convergence": str(folder)}}


def _resolve_paths(config: CampaignConfig, base_dir: Path) -> CampaignConfig:
    def absolute(text: str) -> str:
        path = Path(text).expanduser()
        return str(path if path.is_absolute() else (base_dir / path).resolve())

    generator = config.generator
    if generator.model_path:
        generator = generator.model_copy(update={"model_path": absolute(generator.model_path)})
    cell = config.cell
    if cell.calibration:
        cell = cell.model_copy(update={"calibration": absolute(cell.calibration)})
    warm = config.warm_start.model_copy(
        update={"campaigns": [absolute(c) for c in config.warm_start.campaigns],
                "from_file": [absolute(f) for f in config.warm_start.from_file]}
    )
    return config.model_copy(update={"generator": generator, "cell": cell, "warm_start": warm})


#: the campaign-file table of named variants (``[profiles.<name>.<section>]``)
PROFILES_KEY = "profiles"


def apply_profile(data: dict[str, Any], profile: str | None, source: str) -> dict[str, Any]:
    """Merge the named ``[profiles.<profile>]`` tables over the file's sections (key by key),
    and drop the ``profiles`` table itself: what remains is one plain campaign.

    A file ships its laptop default as the plain sections and e.g. the documented case-study
    fidelity as ``[profiles.paper.fidelity]``, so the two differ by one named option
    (``microloop run cs3 --profile paper``). An unknown profile is an error listing the known ones.
    """
    profiles = data.pop(PROFILES_KEY, {})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise ConfigError(f"invalid campaign file {source}:\n  {PROFILES_KEY}: must be tables "
                          "[profiles.<name>.<section>]")
    if profile is None:
        return data
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"invalid campaign file {source}:\n  profile {profile!r} is not "
                          f"defined (profiles in this file: {known})")
    for section, values in profiles[profile].items():
        if not isinstance(values, dict):
            raise ConfigError(f"invalid campaign file {source}:\n  {PROFILES_KEY}.{profile}."
                              f"{section}: must be a table of [{section}] keys")
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"invalid campaign file {source}:\n  [{section}] must be a table")
        table.update(values)
    return data


def campaign_profiles(name_or_path: str | Path) -> list[str]:
    """The profile names a campaign file defines (``[profiles.<name>]``)."""
    path = resolve_campaign_path(name_or_path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    profiles = data.get(PROFILES_KEY, {})
    return sorted(profiles) if isinstance(profiles, dict) else []


#: What a frozen campaign.toml written before a setting existed ran with, where that differs from
#: today's default: [generator] calendering appeared on 2026-12-02 (every frozen config since
#: records it) and its default became "rearrange" on 2026-12-03; before, there was only "flatten".
FROZEN_LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"generator": {"calendering": "flatten"}}


def load_frozen_campaign(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None
                         ) -> CampaignConfig:
    """A campaign folder's frozen config (FROZEN_CONFIG) as the campaign ran: a setting it does
    not record takes the value it had when the file was written (FROZEN_LEGACY_DEFAULTS), not
    today's default, so a resumed campaign never changes its structures half-way."""
    return load_campaign(path, overrides, legacy_defaults=FROZEN_LEGACY_DEFAULTS)


def load_campaign(name_or_path: str | Path, overrides: dict[str, dict[str, Any]] | None = None,
                  profile: str | None = None,
                  legacy_defaults: dict[str, dict[str, Any]] | None = None) -> CampaignConfig:
    """Read, apply a named profile, override (e.g. {"optimizer": {"budget": 4}}) and validate
    a campaign file. Overrides win over the profile, the profile over the plain sections;
    `legacy_defaults` fill only keys the file does not give (see load_frozen_campaign)."""
    path = resolve_campaign_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"campaign file {path} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"campaign file {path} is not UTF-8 text (TOML must be): {error}") from None
    except OSError as error:
        raise ConfigError(f"campaign file {path} cannot be read: {error}") from None
    for section, values in (legacy_defaults or {}).items():
        table = data.get(section, {})
        if isinstance(table, dict):
            data[section] = {**values, **table}
    data = apply_profile(data, profile, str(path))
    for section, values in (overrides or {}).items():
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"campaign file {path}: [{section}] must be a table")
        table.update({k: v for k, v in values.items() if v is not None})
    return parse_campaign(data, source=str(path), base_dir=path.parent.resolve())


def dump_campaign(config: CampaignConfig, path: Path) -> None:
    """Write the frozen config (what this campaign actually ran with), atomically: a kill or a
    full disk mid-write must not leave a torn campaign.toml that `resume` cannot read."""
    import tomli_w

    text = tomli_w.dumps(config.to_toml_dict())
    # readers (resume, status, report) see the old file or the new one, never a torn one
    from jobs.store import write_text_atomic

    write_text_atomic(path, text)
