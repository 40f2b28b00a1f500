"""What an evaluation answers, as frozen dataclasses with a schema version.

An evaluation crosses process boundaries (an array task -> the controller's journal -> the report)
as JSON; every reader rebuilds these objects with `from_dict`, which refuses an unknown
`schema_version` by name and a record with missing or unknown keys, so a change of shape is an
error at the boundary, not a `None` deep inside a `.get()` chain.

- `CubeMetrics`: the metrics of one cube (``kernels.metrics.volume.VolumeMetrics.to_dict``);
- `SampleMetrics`: one cube's metrics file (``trials/<id>/metrics_<i>.json``);
- `MetricsSummary`: mean and spread over the cubes, with the fraction that percolates;
- `Discharge`, `CellResults`: what the cell model answered (objective discharge + Ragone);
- `Objective`: the optimiser's number, its unit, and whether the design is feasible;
- `SpreadRecord`: the objective of each cube on its own and the design's noise variance;
- `EvaluationResult`: all of it (``trials/<id>/result.json``);
- `EvaluationFailure`: an attempt that failed: exception type, message and innermost frame.
"""

from __future__ import annotations

import math
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

SCHEMA_VERSION = "microloop.evaluation/1"
#: schema versions this code reads (one today; a reader of an older one would be listed here)
READABLE_SCHEMAS = (SCHEMA_VERSION,)

OBJECTIVE_UNITS = {
    "energy_density_Wh_L": "Wh/L",
    "specific_energy_Wh_kg": "Wh/kg",
    "capacity_mAh_g": "mAh/g",
}


class ResultSchemaError(ValueError):
    """A stored record this code cannot read: wrong schema version, missing or unknown keys."""


def _check_schema(data: Mapping[str, Any], what: str) -> None:
    version = data.get("schema_version") if isinstance(data, Mapping) else None
    if version not in READABLE_SCHEMAS:
        raise ResultSchemaError(
            f"{what}: schema_version {version!r} is not one this microloop reads "
            f"(accepted: {list(READABLE_SCHEMAS)}); it was written by another version of "
            "microloop: re-run the evaluation with this one")


def _take(cls: type, data: Mapping[str, Any], what: str,
          optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of dataclass `cls` from `data`; unknown or missing keys name themselves."""
    if not isinstance(data, Mapping):
        raise ResultSchemaError(f"{what} must be a JSON object, got {type(data).__name__}")
    names = [f.name for f in fields(cls) if f.name != "schema_version"]
    unknown = sorted(set(data) - set(names) - {"schema_version"})
    if unknown:
        raise ResultSchemaError(f"{what}: unknown key(s) {unknown}; accepted: {names}")
    missing = sorted(set(names) - set(data) - set(optional))
    if missing:
        raise ResultSchemaError(f"{what}: missing key(s) {missing}")
    return {name: data[name] for name in names if name in data}


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


# ---- metrics ----------------------------------------------------------------------------------

#: the keys of `VolumeMetrics.to_dict` this schema names; any other key is kept in `extra`
CUBE_KEYS = ("volume_fraction", "specific_surface_area_per_um", "cbd_coverage",
             "tortuosity_factor", "effective_conductivity_S_m", "percolating",
             "solid_percolating")


@dataclass(frozen=True)
class CubeMetrics:
    """The metrics of one cube, or their mean over cubes.

    `percolating` is the pore phase's; `solid_percolating` is None when the metrics did not
    report it (older kernels): unknown, never assumed. `extra` keeps keys the kernels added that
    this schema does not name yet, verbatim."""

    volume_fraction: dict[str, float]
    specific_surface_area_per_um: dict[str, float]
    cbd_coverage: float | None
    tortuosity_factor: float | None
    effective_conductivity_S_m: float | None
    percolating: bool | None
    solid_percolating: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CubeMetrics:
        if not isinstance(data, Mapping):
            raise ResultSchemaError(f"cube metrics must be a JSON object, got {data!r}")
        missing = [k for k in ("volume_fraction", "specific_surface_area_per_um") if k not in data]
        if missing:
            raise ResultSchemaError(f"cube metrics: missing key(s) {missing}")
        extra = {k: v for k, v in data.items() if k not in CUBE_KEYS and k != "extra"}
        extra.update(data.get("extra") or {})
        solid = data.get("solid_percolating")
        pore = data.get("percolating")
        return cls(
            volume_fraction={k: float(v) for k, v in data["volume_fraction"].items()},
            specific_surface_area_per_um={
                k: float(v) for k, v in data["specific_surface_area_per_um"].items()},
            cbd_coverage=_opt_float(data.get("cbd_coverage")),
            tortuosity_factor=_opt_float(data.get("tortuosity_factor")),
            effective_conductivity_S_m=_opt_float(data.get("effective_conductivity_S_m")),
            percolating=None if pore is None else bool(pore),
            solid_percolating=None if solid is None else bool(solid),
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """The `VolumeMetrics.to_dict` shape (what `kernels.cell.design.design_from_metrics`
        reads), plus `extra`'s keys; `solid_percolating` only when known."""
        out: dict[str, Any] = {
            "volume_fraction": dict(self.volume_fraction),
            "specific_surface_area_per_um": dict(self.specific_surface_area_per_um),
            "cbd_coverage": self.cbd_coverage,
            "tortuosity_factor": self.tortuosity_factor,
            "effective_conductivity_S_m": self.effective_conductivity_S_m,
            "percolating": self.percolating,
        }
        if self.solid_percolating is not None:   # absent = not reported, as kernels write it
            out["solid_percolating"] = self.solid_percolating
        out.update(self.extra)
        return out

    def percolation(self) -> tuple[bool, str]:
        """(both phases conduct through this cube, why not). The solid's own flag when the
        metrics report it; without it, the measured effective conductivity (0.0 exactly when
        the solid does not connect the faces, kernels.metrics.volume); with neither, unknown
        counts as not percolating."""
        if self.percolating is not True:
            return False, "pore phase does not percolate"
        if self.solid_percolating is not None:
            return (True, "") if self.solid_percolating else (False, "solid does not percolate")
        sigma = self.effective_conductivity_S_m
        if sigma is None or not math.isfinite(sigma):
            return False, "solid percolation unknown (no solid_percolating, no conductivity)"
        return (True, "") if sigma > 0.0 else (False, "solid does not conduct (conductivity 0)")


@dataclass(frozen=True)
class SampleMetrics:
    """One cube's metrics file: which sample, its metrics, where and how long it was solved."""

    sample: int
    metrics: CubeMetrics
    wall_s: float
    device: str
    rank: int
    schema_version: str = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleMetrics:
        _check_schema(data, "sample metrics")
        d = _take(cls, data, "sample metrics")
        return cls(sample=int(d["sample"]), metrics=CubeMetrics.from_dict(d["metrics"]),
                   wall_s=float(d["wall_s"]), device=str(d["device"]), rank=int(d["rank"]))

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "sample": self.sample,
                "metrics": self.metrics.to_dict(), "wall_s": self.wall_s,
                "device": self.device, "rank": self.rank}


@dataclass(frozen=True)
class MetricsSummary:
    """Mean and standard deviation (ddof 1) of every metric over the n cubes of a design.

    `n_percolating` cubes conduct in both phases (pore and solid); when all do, every mean is
    over all n cubes. Otherwise the transport means (tortuosity, conductivity) are over the
    percolating cubes only (`transport_over` says which), and the design is feasible only if
    `percolating_fraction` reaches `objective.min_percolating_fraction` (jobs.evaluate)."""

    mean: CubeMetrics
    std: dict[str, Any]
    n_samples: int
    n_percolating: int
    percolating_fraction: float
    transport_over: list[int]
    samples: list[int]
    solve_wall_s: list[float]
    schema_version: str = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricsSummary:
        _check_schema(data, "metrics summary")
        d = _take(cls, data, "metrics summary")
        return cls(mean=CubeMetrics.from_dict(d["mean"]), std=dict(d["std"]),
                   n_samples=int(d["n_samples"]), n_percolating=int(d["n_percolating"]),
                   percolating_fraction=float(d["percolating_fraction"]),
                   transport_over=[int(i) for i in d["transport_over"]],
                   samples=[int(i) for i in d["samples"]],
                   solve_wall_s=[float(s) for s in d["solve_wall_s"]])

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "mean": self.mean.to_dict(),
                "std": self.std, "n_samples": self.n_samples,
                "n_percolating": self.n_percolating,
                "percolating_fraction": self.percolating_fraction,
                "transport_over": list(self.transport_over), "samples": list(self.samples),
                "solve_wall_s": list(self.solve_wall_s)}


# ---- the cell ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Discharge:
    """One discharge of one design, for one 4680 cell (`kernels.cell.model.DischargeResult`)."""

    power_W: float | None
    c_rate: float | None
    energy_Wh: float
    capacity_Ah: float
    energy_density_Wh_L: float
    specific_energy_Wh_kg: float
    capacity_mAh_g: float | None
    feasible: bool
    reason: str
    power_W_requested: float | None = None
    #: True: the discharge ended on an end-of-discharge event (`end_event` at `end_time_s`)
    #: before the voltage cut-off, so its numbers are a lower bound, never the objective's value
    lower_bound: bool = False
    end_event: str | None = None
    end_time_s: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Discharge:
        d = _take(cls, data, "discharge", optional=("power_W_requested", "lower_bound",
                                                      "end_event", "end_time_s"))
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class CellResults:
    """What the cell model answered for the mean design: the objective's discharge and the
    Ragone sweep. `design` is the `ElectrodeDesign` it scored, as a dict (a quantity the
    metrics did not measure, e.g. `particle_radius_um`, is None)."""

    design: dict[str, float | None]
    thickness_um: float
    objective: Discharge
    ragone: list[Discharge]
    wall_s: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellResults:
        d = _take(cls, data, "cell results")
        return cls(design={k: None if v is None else float(v)
                           for k, v in d["design"].items()},
                   thickness_um=float(d["thickness_um"]),
                   objective=Discharge.from_dict(d["objective"]),
                   ragone=[Discharge.from_dict(r) for r in d["ragone"]],
                   wall_s=float(d["wall_s"]))

    def to_dict(self) -> dict[str, Any]:
        return {"design": dict(self.design), "thickness_um": self.thickness_um,
                "objective": self.objective.to_dict(),
                "ragone": [r.to_dict() for r in self.ragone], "wall_s": self.wall_s}


# ---- the objective ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Objective:
    """The optimiser's number. An infeasible design has `value` None and its reason: the
    optimiser is told it is infeasible, never a value of 0."""

    kind: str
    value: float | None
    unit: str
    feasible: bool
    infeasible_reason: str | None = None

    def __post_init__(self) -> None:
        if self.feasible and (self.value is None or not math.isfinite(self.value)):
            raise ValueError(f"a feasible objective needs a finite value, got {self.value!r}")
        if not self.feasible and (self.value is not None or not self.infeasible_reason):
            raise ValueError("an infeasible objective has value None and an infeasible_reason")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objective:
        d = _take(cls, data, "objective", optional=("infeasible_reason",))
        return cls(kind=str(d["kind"]), value=_opt_float(d["value"]), unit=str(d["unit"]),
                   feasible=bool(d["feasible"]), infeasible_reason=d.get("infeasible_reason"))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "unit": self.unit,
                "feasible": self.feasible, "infeasible_reason": self.infeasible_reason}


@dataclass(frozen=True)
class SpreadRecord:
    """The objective of each cube scored on its own and the design's known noise.

    `noise_var` (variance of the mean over cubes) is None when it is unknown: one cube, or a
    cube that is infeasible on its own (then `note` says which); the optimiser fills it."""

    per_sample: list[float | None]
    n: int
    mean: float | None
    std: float | None
    noise_var: float | None
    rel_std: float | None
    note: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpreadRecord:
        d = _take(cls, data, "objective spread", optional=("note",))
        return cls(per_sample=[_opt_float(v) for v in d["per_sample"]], n=int(d["n"]),
                   mean=_opt_float(d["mean"]), std=_opt_float(d["std"]),
                   noise_var=_opt_float(d["noise_var"]), rel_std=_opt_float(d["rel_std"]),
                   note=str(d.get("note", "")))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Timings:
    """Wall seconds of each stage of one evaluation."""

    generate_s: float
    characterise_s: float
    simulate_s: float
    total_s: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timings:
        return cls(**{k: float(v) for k, v in _take(cls, data, "timings_s").items()})

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class TrainingEnvelope:
    """For a trained generator: whether the design lies where it saw training data."""

    inside: bool
    reason: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingEnvelope:
        d = _take(cls, data, "training envelope")
        return cls(inside=bool(d["inside"]), reason=str(d["reason"]))

    def to_dict(self) -> dict[str, Any]:
        return {"inside": self.inside, "reason": self.reason}


@dataclass(frozen=True)
class EvaluationResult:
    """Everything one evaluation answers (``trials/<id>/result.json``).

    `cell` is None when the design was infeasible before the cell model was asked (too few
    percolating cubes). `attempt`, `host` and `job_id` are filled by the job that ran it."""

    trial_id: int
    params: dict[str, float]
    objective: Objective
    metrics: MetricsSummary
    cell: CellResults | None
    objective_spread: SpreadRecord | None
    timings_s: Timings
    training_envelope: TrainingEnvelope | None
    attempt: int | None = None
    host: str | None = None
    job_id: str | None = None
    #: a multi-objective campaign's further numbers: objective.also, then objective.constraints
    #: (one Objective each, in that order); empty for a single objective
    outcomes: tuple[Objective, ...] = ()
    schema_version: str = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        _check_schema(data, "evaluation result")
        d = _take(cls, data, "evaluation result",
                  optional=("attempt", "host", "job_id", "outcomes"))
        spread, cell, envelope = d["objective_spread"], d["cell"], d["training_envelope"]
        return cls(
            trial_id=int(d["trial_id"]),
            params={k: float(v) for k, v in d["params"].items()},
            objective=Objective.from_dict(d["objective"]),
            metrics=MetricsSummary.from_dict(d["metrics"]),
            cell=None if cell is None else CellResults.from_dict(cell),
            objective_spread=None if spread is None else SpreadRecord.from_dict(spread),
            timings_s=Timings.from_dict(d["timings_s"]),
            training_envelope=None if envelope is None else TrainingEnvelope.from_dict(envelope),
            attempt=None if d.get("attempt") is None else int(d["attempt"]),
            host=d.get("host"),
            job_id=None if d.get("job_id") is None else str(d["job_id"]),
            outcomes=tuple(Objective.from_dict(o) for o in d.get("outcomes") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "trial_id": self.trial_id,
            "params": dict(self.params),
            "objective": self.objective.to_dict(),
            "metrics": self.metrics.to_dict(),
            "cell": None if self.cell is None else self.cell.to_dict(),
            "objective_spread": (None if self.objective_spread is None
                                 else self.objective_spread.to_dict()),
            "timings_s": self.timings_s.to_dict(),
            "training_envelope": (None if self.training_envelope is None
                                  else self.training_envelope.to_dict()),
            "attempt": self.attempt,
            "host": self.host,
            "job_id": self.job_id,
            # written only when there are any: a single-objective result keeps its old shape
            **({"outcomes": [o.to_dict() for o in self.outcomes]} if self.outcomes else {}),
        }

    def told(self) -> tuple[float | list[float] | None, bool, str]:
        """What the optimiser is told: (value, feasible, reason). One objective: its value. With
        outcomes: the vector [objective, *outcomes], or None and infeasible when any of them is
        infeasible (never a 0 standing in for a number the cell could not deliver)."""
        if not self.outcomes:
            return self.objective.value, self.objective.feasible, \
                self.objective.infeasible_reason or ""
        every = (self.objective, *self.outcomes)
        for item in every:
            if not item.feasible:
                return None, False, f"{item.kind}: {item.infeasible_reason}"
        return [float(item.value) for item in every], True, ""

    @property
    def noise_var(self) -> float | None:
        """The design's known noise (variance of the mean over cubes), or None when unknown."""
        spread = self.objective_spread
        if spread is None or spread.noise_var is None or not math.isfinite(spread.noise_var):
            return None
        return spread.noise_var


# ---- a failed attempt -------------------------------------------------------------------------

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>.+?)\s*$')


@dataclass(frozen=True)
class EvaluationFailure:
    """Why an attempt failed: the exception's type and message and the innermost frame
    (``file:line:function``, where it was raised). Empty frame fields when none is known
    (a job killed without a traceback)."""

    exception_type: str
    message: str
    file: str = ""
    line: int = 0
    function: str = ""
    schema_version: str = SCHEMA_VERSION

    @classmethod
    def from_exception(cls, error: BaseException) -> EvaluationFailure:
        frames = traceback.extract_tb(error.__traceback__)
        last = frames[-1] if frames else None
        kind = type(error)
        name = kind.__qualname__ if kind.__module__ == "builtins" else (
            f"{kind.__module__}.{kind.__qualname__}")
        return cls(name, str(error), last.filename if last else "",
                   int(last.lineno or 0) if last else 0, last.name if last else "")

    @classmethod
    def from_traceback_text(cls, text: str) -> EvaluationFailure:
        """Parse a formatted traceback (submitit's remote error text). The last exception of a
        chain and its innermost frame; text without a traceback becomes the message."""
        lines = [line.rstrip() for line in text.strip().splitlines()]
        frame_at = [i for i, line in enumerate(lines) if _FRAME.match(line)]
        if not frame_at:
            head = next((line for line in lines if line.strip()), "unknown error")
            kind, sep, message = head.strip().partition(": ")
            if sep and re.fullmatch(r"[A-Za-z_][\w.]*", kind):
                return cls(kind, "\n".join([message, *lines[lines.index(head) + 1:]]).strip())
            return cls("JobError", "\n".join(lines).strip() or "unknown error")
        match = _FRAME.match(lines[frame_at[-1]])
        assert match is not None
        rest = lines[frame_at[-1] + 1:]
        while rest and (rest[0].startswith((" ", "\t")) or not rest[0].strip()):
            rest = rest[1:]   # the frame's source line and its ^^^^ markers
        head = rest[0] if rest else "unknown error"
        kind, sep, message = head.partition(": ")
        if not sep:
            kind, message = head.strip(), ""
        message = "\n".join([message, *rest[1:]]).strip()
        return cls(kind.strip(), message, match["file"], int(match["line"]), match["function"])

    def reason(self) -> str:
        """One line for the journal and trials.csv: type, message (first 300 chars), where."""
        message = " ".join(self.message.split())[:300]
        where = f" (at {self.file}:{self.line}:{self.function})" if self.file else ""
        return f"{self.exception_type}: {message}{where}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationFailure:
        _check_schema(data, "evaluation failure")
        d = _take(cls, data, "evaluation failure")
        return cls(str(d["exception_type"]), str(d["message"]), str(d["file"]), int(d["line"]),
                   str(d["function"]))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
