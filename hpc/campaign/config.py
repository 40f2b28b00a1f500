"""The campaign file (TOML) as validated pydantic models.

One file describes a whole campaign: what varies, what is scored, how finely, with which optimiser
and on which machines. Everything is checked here, before any job is submitted, and every error
names the key as a dotted path (``space.porosity``) together with what is accepted.
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpc.campaign.resources_config import RoleResources

BUILTIN_CAMPAIGNS = ("quick", "cs1", "cs2", "cs3")

#: The manufacturing parameters a campaign may vary, with their physical ranges and units.
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "am_wt_frac": (0.80, 0.98),
    "porosity": (0.20, 0.55),
    "binder_adhesion": (0.0, 1.0),
    "mass_loading_mg_cm2": (5.0, 50.0),
}
UNITS = {"am_wt_frac": "-", "porosity": "-", "binder_adhesion": "-",
         "mass_loading_mg_cm2": "mg/cm2"}

OBJECTIVE_KINDS = ("energy_density_Wh_L", "specific_energy_Wh_kg", "capacity_mAh_g")
SOLVER_BACKENDS = ("taufactor", "native")
OPTIMIZER_BACKENDS = ("botorch", "dragonfly", "sobol", "random")
EXECUTORS = ("local", "slurm", "debug")

# SLURM names (partition, account, option names) go into #SBATCH lines: a plain alphabet only.
_SLURM_NAME = re.compile(r"^[A-Za-z0-9_.\-,:=+/@%]+$")


class ConfigError(ValueError):
    """A campaign file that cannot be run; the message lists every offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _range_text(name: str) -> str:
    low, high = PHYSICAL_RANGES[name]
    return (f"a number in [{low}, {high}] ({UNITS[name]}) to fix it, "
            "or [low, high] inside that range to vary it")


class SpaceConfig(_Section):
    """Each parameter is a number (fixed) or ``[low, high]`` (varied by the optimiser)."""

    am_wt_frac: float | list[float] = 0.90
    porosity: float | list[float] = 0.35
    binder_adhesion: float | list[float] = 0.5
    mass_loading_mg_cm2: float | list[float] | None = None
    log_scale: list[str] = Field(default_factory=list)

    @field_validator("am_wt_frac", "porosity", "binder_adhesion", "mass_loading_mg_cm2")
    @classmethod
    def _in_physical_range(cls, value: float | list[float] | None, info: Any) -> Any:
        if value is None:
            return value
        name = info.field_name
        low, high = PHYSICAL_RANGES[name]
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and (len(value) != 2 or not value[0] < value[1]):
            raise ValueError(f"got {value}; expected {_range_text(name)} with low < high")
        for number in values:
            if not low <= number <= high:
                raise ValueError(f"got {value}; expected {_range_text(name)}")
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


class ObjectiveConfig(_Section):
    """What the optimiser maximises: a 4680-cell score at one operating point."""

    kind: Literal["energy_density_Wh_L", "specific_energy_Wh_kg", "capacity_mAh_g"] = (
        "energy_density_Wh_L"
    )
    power_W: float | None = Field(default=None, gt=0, le=20000)
    c_rate: float | None = Field(default=None, gt=0, le=50)
    half_cell: bool = False
    #: score each sample on its own and tell the optimiser the variance of the mean as known noise
    noise_from_samples: bool = False

    @model_validator(mode="after")
    def _one_operating_point(self) -> ObjectiveConfig:
        if (self.power_W is None) == (self.c_rate is None):
            raise ValueError("give exactly one of power_W (W per cell, > 0) or c_rate (> 0)")
        return self


class GeneratorConfig(_Section):
    """Where microstructures come from: the procedural simulator, the shipped trained model
    ("default") or a trained model file (kind = "model" with model_path)."""

    kind: Literal["procedural", "default", "model"] = "procedural"
    model_path: str | None = None
    mean_diameter_um: float = Field(default=8.0, gt=0.5, le=50)
    diameter_spread: float = Field(default=0.25, ge=0, le=1)

    @model_validator(mode="after")
    def _model_needs_path(self) -> GeneratorConfig:
        if self.kind == "model" and not self.model_path:
            raise ValueError("kind = 'model' needs model_path = 'path/to/generator.pt'")
        if self.kind != "model" and self.model_path:
            raise ValueError("model_path is only used with kind = 'model'")
        return self


class FidelityConfig(_Section):
    """How finely each design is characterised: sub-volumes, their size and the solver."""

    n_cubes: int = Field(default=2, ge=1, le=4096)
    cube_voxels: int = Field(default=32, ge=16, le=1024)
    voxel_um: float = Field(default=1.0, gt=0, le=10)
    backend: Literal["taufactor", "native"] = "native"
    rel_tol: float = Field(default=1e-3, gt=0, le=0.1)
    conductivity_am_S_m: float | None = Field(default=None, gt=0)
    conductivity_cbd_S_m: float | None = Field(default=None, gt=0)
    mpi_ranks: int = Field(default=1, ge=1, le=4096)
    #: a `microloop convergence` study folder: its recommended cube size and count (and voxel
    #: size) become n_cubes, cube_voxels and voxel_um (see apply_convergence_recommendation)
    from_convergence: str | None = None


class CellConfig(_Section):
    """The 4680 cell the electrode is scored in."""

    parameter_set: str = "Chen2020"
    packaging: dict[str, float] = Field(default_factory=dict)
    #: used when space.mass_loading_mg_cm2 is not given; None = the parameter set's (Chen2020 75.6)
    thickness_um: float | None = Field(default=None, ge=10, le=500)
    ragone_powers_W: list[float] = Field(default_factory=list)
    #: a calibration file written by `microloop calibrate` (path, relative to the campaign file)
    calibration: str | None = None

    @field_validator("ragone_powers_W")
    @classmethod
    def _positive_powers(cls, powers: list[float]) -> list[float]:
        if any(not 0 < p <= 20000 for p in powers):
            raise ValueError(f"got {powers}; every power must be in (0, 20000] W")
        return powers


class OptimizerConfig(_Section):
    """The Bayesian optimiser and how many evaluations it may spend."""

    backend: Literal["botorch", "dragonfly", "sobol", "random"] = "botorch"
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
        if isinstance(data, dict) and isinstance(data.get("budget"), int):
            n_initial = data.get("n_initial", 4)
            if isinstance(n_initial, int) and n_initial > data["budget"] >= 1:
                data = {**data, "n_initial": data["budget"]}
        return data


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
    poll_interval_s: float = Field(default=1.0, gt=0, le=600)
    sbatch_options: dict[str, str] = Field(default_factory=dict)
    controller_walltime_min: int = Field(default=24 * 60, ge=1, le=60 * 24 * 30)
    controller_cpus: int = Field(default=2, ge=1, le=1024)
    # `microloop submit`: SLURM signals the controller job this long before its walltime; it
    # then requeues itself. Must leave time for the signal (SLURM sends it up to ~30 s late).
    controller_requeue_signal_s: int = Field(default=300, ge=10, le=3600)
    # an ended job's result file may appear this much later on a shared file system (NFS)
    result_grace_s: float = Field(default=5.0, ge=0, le=3600)
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
        if self.dask_workers_max is not None and self.dask_workers_max < self.dask_workers:
            raise ValueError(f"dask_workers_max = {self.dask_workers_max} is below "
                             f"dask_workers = {self.dask_workers} (the pool's minimum)")
        if self.evaluation.gres and self.gpus_per_task:
            raise ValueError(
                f"gpus_per_task = {self.gpus_per_task} and evaluation.gres = "
                f"{self.evaluation.gres!r} both ask for GPUs; set one of them"
            )
        return self

    @field_validator("partition", "account", "dask_interface")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not _SLURM_NAME.match(value):
            raise ValueError(
                f"got {value!r}; allowed characters: letters, digits and _ . - , : = + / @ %"
            )
        return value

    @field_validator("sbatch_options")
    @classmethod
    def _plain_options(cls, options: dict[str, str]) -> dict[str, str]:
        for key, value in options.items():
            if not re.match(r"^[a-z][a-z0-9\-]*$", key):
                raise ValueError(f"option name {key!r}: use sbatch's long option names, e.g. 'qos'")
            if not _SLURM_NAME.match(str(value)):
                raise ValueError(
                    f"{key} = {value!r}: allowed characters: letters, digits and "
                    "_ . - , : = + / @ %"
                )
        return options


class WarmStartConfig(_Section):
    """Earlier campaign folders whose observations seed the optimiser when their spaces match."""

    campaigns: list[str] = Field(default_factory=list)


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
    def _thickness_or_loading(self) -> CampaignConfig:
        has_loading = self.space.mass_loading_mg_cm2 is not None
        if has_loading and self.cell.thickness_um is not None:
            raise ValueError(
                "cell.thickness_um is set but space.mass_loading_mg_cm2 fixes the thickness: "
                "remove one of them"
            )
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
        gen = self.generator
        cell: dict[str, Any] = {
            "parameter_set": self.cell.parameter_set,
            "packaging": dict(self.cell.packaging),
            "ragone_powers_W": list(self.cell.ragone_powers_W),
        }
        if self.cell.thickness_um is not None:
            cell["thickness_um"] = self.cell.thickness_um
        if self.cell.calibration is not None:
            try:
                cell["calibration"] = json.loads(Path(self.cell.calibration).read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise ConfigError(f"cell.calibration: cannot read {self.cell.calibration!r} "
                                  f"as a calibration file (JSON from `microloop calibrate`): "
                                  f"{error}") from None
        spec = {
            "fidelity": self.fidelity.model_dump(exclude={"from_convergence"}),
            "generator": {
                "kind": gen.model_path if gen.kind == "model" else gen.kind,
                "mean_diameter_um": gen.mean_diameter_um,
                "diameter_spread": gen.diameter_spread,
            },
            "objective": self.objective.model_dump(),
            "cell": cell,
            "seed": self.optimizer.seed,
        }
        return _spec_through_jobs(spec)

    def to_toml_dict(self) -> dict[str, Any]:
        """The config as TOML-writable data (no None values), for the frozen campaign.toml."""
        return _drop_none(self.model_dump())


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


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Walk a pydantic location to the model that rejected an extra key; return its field names."""
    current: Any = model
    for part in loc[:-1]:
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
        return list(current.model_fields)
    return None


def format_validation_error(error: ValidationError, source: str,
                            model: type[BaseModel] | None = None,
                            what: str = "campaign file") -> str:
    """One line per offending key (dotted path), with the accepted keys for an unknown one.
    `model` is the root model validated (default: CampaignConfig)."""
    model = model or CampaignConfig
    lines = [f"invalid {what} {source}:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(str(part) for part in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {path}: unknown key{hint}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "literal_error":
            message = f"got {item.get('input')!r}; {message[0].lower()}{message[1:]}"
        elif item["type"] == "missing":
            message = "required key is missing"
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
    if not path.exists():
        raise ConfigError(
            f"campaign file {text!r} not found; give a path to a .toml file or one of "
            f"{', '.join(BUILTIN_CAMPAIGNS)}"
        )
    return path


def parse_campaign(data: dict[str, Any], source: str = "<dict>",
                   base_dir: Path | None = None) -> CampaignConfig:
    """Validate campaign data; relative paths (model file, warm starts) resolve to base_dir."""
    data = apply_convergence_recommendation(data, source, base_dir)
    try:
        config = CampaignConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None
    if base_dir is not None:
        config = _resolve_paths(config, base_dir)
    if config.generator.model_path and not Path(config.generator.model_path).exists():
        raise ConfigError(
            f"invalid campaign file {source}:\n  generator.model_path: file "
            f"{config.generator.model_path!r} does not exist"
        )
    if config.cell.calibration and not Path(config.cell.calibration).exists():
        raise ConfigError(
            f"invalid campaign file {source}:\n  cell.calibration: file "
            f"{config.cell.calibration!r} does not exist (write one with `microloop calibrate`)"
        )
    return config


def apply_convergence_recommendation(data: dict[str, Any], source: str = "<dict>",
                                     base_dir: Path | None = None) -> dict[str, Any]:
    """Fill [fidelity] n_cubes, cube_voxels and voxel_um from a convergence study's recommendation
    (`fidelity.from_convergence = "study folder"`). Giving them as well is an error unless they
    agree, so a campaign never silently runs at another fidelity than the one it names."""
    fidelity = data.get("fidelity")
    if not isinstance(fidelity, dict) or not fidelity.get("from_convergence"):
        return data
    key = "fidelity.from_convergence"
    folder = Path(str(fidelity["from_convergence"])).expanduser()
    if not folder.is_absolute() and base_dir is not None:
        folder = (base_dir / folder).resolve()
    summary_path, plan_path = folder / "convergence.json", folder / "study.json"
    if not summary_path.exists() or not plan_path.exists():
        raise ConfigError(f"invalid campaign file {source}:\n  {key}: {str(folder)!r} holds no "
                          "finished convergence study (run `microloop convergence ... --dir` first)")
    summary = json.loads(summary_path.read_text())
    plan = json.loads(plan_path.read_text())
    recommended = summary.get("recommended")
    if not recommended:
        raise ConfigError(f"invalid campaign file {source}:\n  {key}: the study in {str(folder)!r} "
                          "recommends nothing (no size met its tolerance): add larger cube sizes")
    chosen = {"n_cubes": int(recommended["n_cubes"]),
              "cube_voxels": int(recommended["cube_voxels"]),
              "voxel_um": float(plan["voxel_um"])}
    for name, value in chosen.items():
        if name in fidelity and fidelity[name] != value:
            raise ConfigError(f"invalid campaign file {source}:\n  fidelity.{name}: {fidelity[name]!r}"
                              f" contradicts {key} (which gives {value!r}); remove one of them")
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
        update={"campaigns": [absolute(c) for c in config.warm_start.campaigns]}
    )
    return config.model_copy(update={"generator": generator, "cell": cell, "warm_start": warm})


def load_campaign(name_or_path: str | Path, overrides: dict[str, dict[str, Any]] | None = None
                  ) -> CampaignConfig:
    """Read, override (e.g. {"optimizer": {"budget": 4}}) and validate a campaign file."""
    path = resolve_campaign_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"campaign file {path} is not valid TOML: {error}") from None
    for section, values in (overrides or {}).items():
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"campaign file {path}: [{section}] must be a table")
        table.update({k: v for k, v in values.items() if v is not None})
    return parse_campaign(data, source=str(path), base_dir=path.parent.resolve())


def dump_campaign(config: CampaignConfig, path: Path) -> None:
    """Write the frozen config (what this campaign actually ran with)."""
    import tomli_w

    path.write_text(tomli_w.dumps(config.to_toml_dict()))
