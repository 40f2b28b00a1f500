"""The trial table: every evaluation's state, rebuilt from the journal, written as trials.csv.

The journal is the truth; this module folds its events into one `Trial` per evaluation and
writes `trials.csv` atomically (temporary file + rename), so a reader never sees half a table.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.contract.result import EvaluationFailure, EvaluationResult

TRIALS_NAME = "trials.csv"

#: Trial statuses. "proposed": journaled, not yet handed to the executor; "submitted": has a job.
STATUSES = ("proposed", "submitted", "complete", "failed")

#: Scalar metrics copied from the evaluation result into trials.csv (mean over sub-volumes).
METRIC_COLUMNS = ("tortuosity_factor", "effective_conductivity_S_m", "cbd_coverage")

#: Version of the trials.csv columns (docs/formats.md); bump on any change of names or order.
TRIALS_SCHEMA_VERSION = "microloop.trials-csv/3"
#: The columns before the parameters, and those after them, in this fixed order: a column is
#: there (empty) even when no trial has a value yet, so the order never depends on which
#: results came first (it changed after `resume` in version 1).
LEADING_COLUMNS = ("trial_id", "status", "objective", "objective_unit", "feasible", "reason",
                   "stop_event")
RESULT_COLUMNS = (
    *METRIC_COLUMNS, "percolating_fraction",
    "volume_fraction_pore", "volume_fraction_am", "volume_fraction_cbd",
    "surface_area_am_pore_per_um", "surface_area_am_cbd_per_um",
    "thickness_um", "objective_sd", "objective_noise_var",
    "in_training_envelope", "envelope_reason",
    "time_generate_s", "time_characterise_s", "time_simulate_s", "time_total_s",
)
TRAILING_COLUMNS = ("attempts", "job_ids", "proposed_utc", "submitted_utc", "finished_utc",
                    "wall_s")


@dataclass
class Trial:
    trial_id: int
    params: dict[str, float]
    status: str = "proposed"
    attempt: int = 0
    job_ids: list[str] = field(default_factory=list)
    objective: float | None = None
    feasible: bool | None = None
    reason: str = ""
    result: EvaluationResult | None = None
    failure: EvaluationFailure | None = None  # the last failed attempt's error
    proposed_at: float = 0.0
    submitted_at: float | None = None
    finished_at: float | None = None
    submitting: bool = False  # a "submitting" event without its "submitted" yet
    #: the tag and position the last submission carried (hpc.machine.executor.submit_array):
    #: how a restarted controller finds a job accepted before its id was journaled
    submission: str | None = None
    submission_index: int | None = None
    #: multi-fidelity campaigns: the index into [fidelity] levels this trial is evaluated at
    fidelity_level: int | None = None
    #: multi-fidelity campaigns: the final recommendation, re-evaluated at the top level
    recommendation: bool = False

    @property
    def job_id(self) -> str | None:
        return self.job_ids[-1] if self.job_ids else None

    @property
    def done(self) -> bool:
        return self.status in ("complete", "failed")


def fold_events(events: list[dict[str, Any]]) -> dict[int, Trial]:
    """Replay journal events into trials (later events override earlier ones)."""
    trials: dict[int, Trial] = {}
    for event in events:
        apply_event(trials, event)
    return trials


def apply_event(trials: dict[int, Trial], event: dict[str, Any]) -> None:
    """Apply one journal event to the trial table in place."""
    kind = event["event"]
    if "trial_id" not in event:
        return
    tid = int(event["trial_id"])
    if kind == "proposed":
        level = event.get("fidelity_level")
        trials[tid] = Trial(tid, dict(event["params"]), proposed_at=event["time"],
                            fidelity_level=None if level is None else int(level),
                            recommendation=bool(event.get("recommendation", False)))
        return
    trial = trials.get(tid)
    if trial is None:
        raise ValueError(f"journal: event {kind!r} for trial {tid} before it was proposed")
    if kind == "submitting":
        trial.attempt = int(event["attempt"])
        trial.submitting = True
        trial.submission = event.get("submission")
        trial.submission_index = event.get("index")
    elif kind == "submitted":
        trial.attempt = int(event["attempt"])
        trial.job_ids.append(str(event["job_id"]))
        trial.status = "submitted"
        trial.submitting = False
        trial.submitted_at = trial.submitted_at or event["time"]
    elif kind == "completed":
        result = EvaluationResult.from_dict(event["result"])
        trial.status = "complete"
        trial.result = result
        trial.objective = result.objective.value     # None for an infeasible design
        trial.feasible = result.objective.feasible
        trial.reason = result.objective.infeasible_reason or ""
        trial.finished_at = event["time"]
    elif kind in ("retried", "failed"):
        trial.status = "proposed" if kind == "retried" else "failed"  # retried: submit again
        trial.submitting = False  # a retried submission used up its attempt
        trial.reason = event["reason"]
        if event.get("failure") is not None:
            trial.failure = EvaluationFailure.from_dict(event["failure"])
        if kind == "failed":
            trial.finished_at = event["time"]


def _metric_values(result: EvaluationResult | None) -> dict[str, Any]:
    if result is None:
        return {}
    metrics = result.metrics
    mean = metrics.mean
    out: dict[str, Any] = {name: getattr(mean, name) for name in METRIC_COLUMNS}
    out["percolating_fraction"] = metrics.percolating_fraction
    for phase, value in mean.volume_fraction.items():
        out[f"volume_fraction_{phase}"] = value
    for name, value in mean.specific_surface_area_per_um.items():
        out[f"surface_area_{name}_per_um"] = value
    if result.cell is not None:
        out["thickness_um"] = result.cell.thickness_um
    spread = result.objective_spread
    if spread is not None:
        out["objective_sd"] = spread.std
        out["objective_noise_var"] = spread.noise_var
    envelope = result.training_envelope
    if envelope is not None:  # a trained generator: is the design where it saw training data?
        out["in_training_envelope"] = envelope.inside
        if not envelope.inside:
            out["envelope_reason"] = envelope.reason
    for name, value in result.timings_s.to_dict().items():
        out[f"time_{name}"] = value
    return out


def _iso_utc(epoch_s: float | None) -> str | None:
    """ISO 8601 UTC with seconds (journal times are epoch seconds)."""
    if not epoch_s:
        return None
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="seconds")


def outcome_columns(labels: Sequence[str]) -> list[tuple[str, str]]:
    """The (value, unit) column names of a multi-objective campaign's further outcomes
    (objective.also, then objective.constraints), from their labels: "energy_density_Wh_L at
    200 W" -> ("energy_density_Wh_L_at_200W", "energy_density_Wh_L_at_200W_unit"). A repeated
    label gets a suffix (_2, _3, ...), so no column hides another."""
    columns: list[tuple[str, str]] = []
    seen: set[str] = set()
    for label in labels:
        base = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9.]+", "_", label.replace(" W", "W")))
        name, k = base.strip("_"), 1
        while name in seen:
            k += 1
            name = f"{base.strip('_')}_{k}"
        seen.add(name)
        columns.append((name, f"{name}_unit"))
    return columns


def trial_rows(trials: dict[int, Trial], param_names: list[str],
               outcome_labels: Sequence[str] = ()) -> tuple[list[str], list[dict]]:
    """Columns and rows of trials.csv: the fixed leading columns, a multi-objective campaign's
    further outcomes (`outcome_labels`: one value and one unit column each), the parameters in
    the campaign's order, the fixed result columns, then (sorted, so still independent of the
    order results arrived in) any result value this schema does not name yet.

    Without `outcome_labels`, results that carry outcomes name them by position and kind
    (``outcome_1_<kind>``): no number a result holds is left out of the table."""
    ordered = sorted(trials.values(), key=lambda t: t.trial_id)
    if not outcome_labels:
        n_outcomes = max((len(t.result.outcomes) for t in ordered if t.result is not None),
                         default=0)
        kinds = {}
        for trial in ordered:
            if trial.result is not None:
                for i, outcome in enumerate(trial.result.outcomes):
                    kinds.setdefault(i, outcome.kind)
        outcome_labels = [f"outcome {i + 1} {kinds[i]}" for i in range(n_outcomes)]
    outcomes = outcome_columns(outcome_labels)
    rows = []
    unnamed: set[str] = set()
    for trial in ordered:
        metrics = _metric_values(trial.result)
        if trial.fidelity_level is not None:  # multi-fidelity: level and recommendation flag
            metrics["fidelity_level"] = trial.fidelity_level
            metrics["recommendation"] = trial.recommendation
        unnamed.update(name for name in metrics if name not in RESULT_COLUMNS)
        good = trial.status == "complete" and trial.feasible is True
        cell = trial.result.cell if trial.result is not None else None
        row = {
            "trial_id": trial.trial_id,
            "status": trial.status,
            "objective": trial.objective,
            "objective_unit": (trial.result.objective.unit if trial.result is not None
                               else None),
            "feasible": trial.feasible,
            "reason": "" if good else trial.reason.replace("\n", " ")[:500],
            # how PyBaMM's discharge ended (e.g. the minimum-voltage event): not a failure
            "stop_event": (cell.objective.reason.replace("\n", " ")[:200]
                           if cell is not None and cell.objective.feasible else None),
            **_outcome_values(trial, outcomes),
            **{name: trial.params.get(name) for name in param_names},
            **metrics,
            "attempts": trial.attempt,
            "job_ids": ";".join(trial.job_ids),
            "proposed_utc": _iso_utc(trial.proposed_at),
            "submitted_utc": _iso_utc(trial.submitted_at),
            "finished_utc": _iso_utc(trial.finished_at),
            "wall_s": (trial.finished_at - trial.submitted_at)
            if trial.finished_at and trial.submitted_at else None,
        }
        rows.append(row)
    columns = [*LEADING_COLUMNS, *(name for pair in outcomes for name in pair), *param_names,
               *RESULT_COLUMNS, *sorted(unnamed), *TRAILING_COLUMNS]
    return columns, rows


def _outcome_values(trial: Trial, columns: list[tuple[str, str]]) -> dict[str, Any]:
    """Each further outcome's value (empty when infeasible or not finished) and unit."""
    got = trial.result.outcomes if trial.result is not None else ()
    if got and len(got) != len(columns):
        raise ValueError(f"trial {trial.trial_id} has {len(got)} outcomes but the campaign names "
                         f"{len(columns)} (objective.also + objective.constraints)")
    out: dict[str, Any] = {}
    for (value_column, unit_column), outcome in zip(columns, got or [None] * len(columns),
                                                    strict=True):
        out[value_column] = None if outcome is None else outcome.value
        out[unit_column] = None if outcome is None else outcome.unit
    return out


def write_trials_csv(directory: Path, trials: dict[int, Trial], param_names: list[str],
                     outcome_labels: Sequence[str] = ()) -> Path:
    """Rewrite <directory>/trials.csv atomically (`outcome_labels`: see `trial_rows`)."""
    columns, rows = trial_rows(trials, param_names, outcome_labels)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    path = Path(directory) / TRIALS_NAME
    tmp = path.with_name(f".{TRIALS_NAME}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
