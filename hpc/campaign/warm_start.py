"""Transfer between campaigns: which earlier observations a campaign may be told, and the
voxel-free observations file that carries them between sites.

Why refuse rather than mix: an objective value is only comparable under the same fidelity
(a 32^3 cube scatters tortuosity by tens of percent), the same generator, and the same operating
point (Wh/L at 10 W and at 200 W are different functions). A source that differs in any of these
is refused with the reason, unless the user names that difference in `[warm_start] allow`
(ALLOWABLE): then its observations are told as they are, a choice the journal records.
Space, fixed values, objective kind and cell are never negotiable: the values would mean
something else.

Fidelity is modelled instead of refused where it can be: a multi-fidelity campaign (`[fidelity]
levels`) takes each observation made at one of its levels as an observation at that level (the
fidelity is an input of its GP), and a campaign takes a multi-fidelity source's observations made
at its own fidelity (e.g. the source's top level); observations at other fidelities are dropped.

`[warm_start] mode = "prior_mean"` models instead of refusing what differs in fidelity,
generator, power or C-rate (and is not in `allow`): the source becomes a source task of the
``botorch_transfer`` back-end (bayes/transfer.py), whose GP takes the source's surrogate as its
prior mean with a learned scale and offset (`source_task`). An exported surrogate is used as
fitted; otherwise a GP is fitted on the source's observations.

Both sources, a campaign folder (`[warm_start] campaigns`) and an exported file
(`[warm_start] from_file`, written by `microloop export`), are described by the same
`campaign_context` and checked by the same `context_difference`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.campaign.config import CampaignConfig, ConfigError, load_frozen_campaign
from hpc.campaign.folder import FROZEN_CONFIG, TRIALS_NAME
from hpc.campaign.journal import read_journal
from hpc.campaign.trials import fold_events

OBSERVATIONS_SCHEMA = "microloop.observations/2"
#: /1: no fidelity levels, no surrogate; still read
READABLE_SCHEMAS = ("microloop.observations/1", OBSERVATIONS_SCHEMA)
#: differences a user may accept by name in `[warm_start] allow`
ALLOWABLE = ("fidelity", "generator", "power", "c_rate")


@dataclass(frozen=True)
class WarmObservation:
    """One completed evaluation of an earlier campaign, as this one's optimiser is told it."""

    params: dict[str, float]
    value: float | None
    noise_var: float | None
    feasible: bool
    reason: str
    #: multi-fidelity campaigns: the index into this campaign's [fidelity] levels
    fidelity_level: int | None = None


def _model_digest(path: str | None) -> str | None:
    """sha256 of a trained generator file: the generator's identity across sites and folders."""
    if not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def campaign_context(config: CampaignConfig) -> dict[str, Any]:
    """What an observation's value depends on besides its parameters, as plain JSON."""
    generator = config.generator
    objective = config.objective.model_dump(mode="json")
    return {
        "space": {"varied": sorted(config.space.bounds()), "fixed": config.space.fixed()},
        "objective": {k: v for k, v in objective.items() if k not in ("power_W", "c_rate")},
        "power_W": config.objective.power_W,
        "c_rate": config.objective.c_rate,
        "fidelity": {"n_cubes": config.fidelity.n_cubes,
                     "cube_voxels": config.fidelity.cube_voxels,
                     "voxel_um": config.fidelity.voxel_um,
                     # multi-fidelity only (absent otherwise: older contexts compare equal)
                     **({"levels": [{"n_cubes": lv.n_cubes, "cube_voxels": lv.cube_voxels}
                                    for lv in config.fidelity.levels]}
                        if config.fidelity.levels else {})},
        "generator": {"kind": generator.kind,
                      "model_sha256": _model_digest(generator.model_path),
                      "mean_diameter_um": generator.mean_diameter_um,
                      "diameter_spread": generator.diameter_spread,
                      # only when not "flatten", the one model before 2026-12-02: older
                      # contexts (flattened structures) compare equal
                      **({"calendering": generator.calendering}
                         if generator.calendering not in (None, "flatten") else {})},
        "cell": {k: v for k, v in config.cell.model_dump(mode="json").items()
                 if k != "calibration"},
        "cell_calibration_sha256": _model_digest(config.cell.calibration),
    }


def context_difference(source: Mapping[str, Any], here: Mapping[str, Any],
                       allow: Iterable[str] = ()) -> str:
    """Why observations made under `source` may not be told to a campaign under `here`
    ("" when they may). Differences named in `allow` (see ALLOWABLE) are accepted."""
    allow = set(allow)
    if source["space"]["varied"] != here["space"]["varied"]:
        return (f"it varies {source['space']['varied']}, this campaign varies "
                f"{here['space']['varied']}")
    if source["space"]["fixed"] != here["space"]["fixed"]:
        return f"fixed values differ: {source['space']['fixed']} vs {here['space']['fixed']}"
    if source["objective"] != here["objective"]:
        return f"objective differs: {source['objective']} vs {here['objective']}"
    if (source["cell"] != here["cell"]
            or source["cell_calibration_sha256"] != here["cell_calibration_sha256"]):
        return "the cell (parameter set, packaging, thickness or calibration) differs"
    checks = (
        ("power", "power_W", "power differs"),
        ("c_rate", "c_rate", "C-rate differs"),
        ("fidelity", "fidelity", "fidelity differs"),
        ("generator", "generator", "generator differs"),
    )
    for name, key, what in checks:
        if source[key] != here[key] and name not in allow:
            return (f"{what}: {source[key]} there vs {here[key]} here (accept it with "
                    f'[warm_start] allow = ["{name}"])')
    return ""


def _observations_of(trials: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for trial in sorted(trials, key=lambda t: t.trial_id):
        if trial.status != "complete" or trial.result is None:
            continue
        objective = trial.result.objective
        row = {"trial_id": trial.trial_id, "params": dict(trial.params),
               "value": objective.value, "noise_var": trial.result.noise_var,
               "feasible": bool(objective.feasible),
               "reason": objective.infeasible_reason or ""}
        if getattr(trial, "fidelity_level", None) is not None:
            row["fidelity_level"] = trial.fidelity_level
        out.append(row)
    return out


def export_observations(directory: Path, surrogate: bool = False) -> dict[str, Any]:
    """The observations file of a campaign folder: its completed evaluations and the context
    they were made in. No microstructures, no generator weights (only their sha256).
    ``surrogate``: also the GP fitted on them (hpc/campaign/surrogate.py)."""

    frozen = directory / FROZEN_CONFIG
    if not frozen.exists():
        raise ValueError(f"{directory} is not a campaign folder (no {FROZEN_CONFIG})")
    config = load_frozen_campaign(frozen)
    observations = _observations_of(fold_events(read_journal(directory)).values())
    return _observations_document(config, observations, surrogate)


def _table_float(row: Mapping[str, str], column: str, where: str) -> float | None:
    """A trials.csv cell as a float (None when empty); ValueError naming the cell otherwise."""
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: column {column!r} holds {text!r}, not a number") from None


def _check_summary_matches(summary_path: Path, config: CampaignConfig) -> None:
    """A report summary.json kept beside a trials table (the case-study data keep one) must
    agree with the campaign file the context is taken from: objective, power/C-rate, bounds,
    fixed values, fidelity and, where the summary records it (reports since 2026-12-03), the
    generator's calendering model. ValueError naming the first difference."""
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{summary_path}: cannot read it: {error}") from None
    objective = config.objective.model_dump(mode="json")
    here = {
        "objective.kind": objective["kind"], "objective.power_W": objective["power_W"],
        "objective.c_rate": objective["c_rate"],
        "bounds": {k: list(v) for k, v in config.space.bounds().items()},
        "fixed": config.space.fixed(),
        "fidelity.n_cubes": config.fidelity.n_cubes,
        "fidelity.cube_voxels": config.fidelity.cube_voxels,
        "fidelity.voxel_um": config.fidelity.voxel_um,
    }
    there_objective = summary.get("objective", {})
    there_fidelity = summary.get("fidelity", {})
    there = {
        "objective.kind": there_objective.get("kind"),
        "objective.power_W": there_objective.get("power_W"),
        "objective.c_rate": there_objective.get("c_rate"),
        "bounds": {k: list(v) for k, v in summary.get("bounds", {}).items()},
        "fixed": summary.get("fixed", {}),
        "fidelity.n_cubes": there_fidelity.get("n_cubes"),
        "fidelity.cube_voxels": there_fidelity.get("cube_voxels"),
        "fidelity.voxel_um": there_fidelity.get("voxel_um"),
    }
    if "generator" in summary:
        here["generator.calendering"] = config.generator.calendering
        there["generator.calendering"] = summary["generator"].get("calendering")
    for key, value in here.items():
        if there[key] != value:
            raise ValueError(f"{summary_path}: {key} is {there[key]!r} there but {value!r} in the "
                             f"campaign file {config.name!r} (wrong campaign or profile?)")


def observations_from_table(directory: Path, config: CampaignConfig,
                            summary_name: str | None = None,
                            surrogate: bool = False) -> dict[str, Any]:
    """The observations file of a folder that keeps only a campaign's trials.csv (e.g. the
    case-study data under docs/data/case-studies), its context taken from ``config``: the
    campaign file (and profile) it was run with, which the table does not record. That is an
    assertion by the caller, so the provenance says so; when ``summary_name`` names the
    campaign report's summary.json kept beside the table, its objective, bounds, fixed values
    and fidelity must agree with ``config`` (ValueError otherwise).

    Rows: completed trials, feasible or not (failed ones are not observations), with the
    parameters the campaign varies and their noise variance when recorded. ``surrogate``: also
    the GP fitted on them, as `export_observations` does."""
    table = Path(directory) / TRIALS_NAME
    if not table.exists():
        raise ValueError(f"{directory} holds neither {FROZEN_CONFIG} nor {TRIALS_NAME}")
    if config.fidelity.levels:
        raise ValueError(f"{table}: a multi-fidelity campaign's table cannot be read without "
                         "its journal (each row's level); export the campaign folder instead")
    if summary_name is not None and (Path(directory) / summary_name).exists():
        _check_summary_matches(Path(directory) / summary_name, config)
    names = sorted(config.space.bounds())
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [n for n in names if n not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{table}: no column for {', '.join(missing)}, which the campaign "
                             f"file {config.name!r} varies (wrong campaign?)")
        rows = list(reader)
        columns = set(reader.fieldnames or [])
    fixed = config.space.fixed()
    observations = []
    for number, row in enumerate(rows, start=2):
        if row.get("status") != "complete":
            continue
        where = f"{table} line {number}"
        params: dict[str, float] = {}
        for name in names:
            value = _table_float(row, name, where)
            if value is None:
                raise ValueError(f"{where}: parameter {name!r} is empty")
            params[name] = value
        for name, fixed_value in fixed.items():   # as the journal holds them: fixed ones too
            value = _table_float(row, name, where) if name in columns else fixed_value
            if value != fixed_value:
                raise ValueError(f"{where}: {name!r} is {value} but the campaign file "
                                 f"{config.name!r} fixes it at {fixed_value} (wrong campaign?)")
            params[name] = float(fixed_value)
        feasible = row.get("feasible") == "True"
        value = _table_float(row, "objective", where)
        if feasible and (value is None or not math.isfinite(value)):
            raise ValueError(f"{where}: a feasible trial needs a finite objective; got "
                             f"{row.get('objective')!r}")
        observations.append({"trial_id": int(row["trial_id"]), "params": params,
                             "value": value if feasible else None,
                             "noise_var": _table_float(row, "objective_noise_var", where),
                             "feasible": feasible,
                             "reason": "" if feasible else (row.get("reason") or "")})
    # what the table does not hold: the context is the exporter's claim
    return _observations_document(
        config, observations, surrogate,
        rebuilt_from=f"{TRIALS_NAME} (no journal, no frozen config): the context is the named "
                     "campaign file's, asserted by the exporter")


def _observations_document(config: Any, observations: list[dict[str, Any]], surrogate: bool,
                           **provenance: str) -> dict[str, Any]:
    """The observations file's content (OBSERVATIONS_SCHEMA): context, observations, the fitted
    GP when asked, and provenance (plus `provenance`'s extra keys)."""
    from jobs.provenance import package_version as installed_version

    extra: dict[str, Any] = {}
    if surrogate:
        from hpc.campaign.surrogate import fit_surrogate

        extra["surrogate"] = fit_surrogate(config, observations)
    return {
        "schema_version": OBSERVATIONS_SCHEMA,
        "context": campaign_context(config),
        "observations": observations,
        **extra,
        "provenance": {"campaign": config.name, "description": config.description,
                       "microloop_version": installed_version(),
                       "exported_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                       "n_observations": len(observations), **provenance},
    }


def read_observations_file(path: Path) -> dict[str, Any]:
    """An observations file, checked; ValueError naming the file and the key that is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the observations file: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object written by `microloop export`")
    if data.get("schema_version") not in READABLE_SCHEMAS:
        raise ValueError(f"{path}: schema_version {data.get('schema_version')!r}; accepted: "
                         f"{list(READABLE_SCHEMAS)} (write it with `microloop export`)")
    for key in ("context", "observations"):
        if key not in data:
            raise ValueError(f"{path}: missing {key!r}")
    context = data["context"]
    needed = ("space", "objective", "power_W", "c_rate", "fidelity", "generator", "cell",
              "cell_calibration_sha256")
    missing = [k for k in needed if k not in context]
    if missing:
        raise ValueError(f"{path}: context lacks {', '.join(missing)}")
    for i, seen in enumerate(data["observations"]):
        for key in ("params", "value", "noise_var", "feasible", "reason"):
            if key not in seen:
                raise ValueError(f"{path}: observations[{i}] lacks {key!r}")
        value = seen["value"]
        if seen["feasible"] and (not isinstance(value, int | float) or not math.isfinite(value)):
            raise ValueError(f"{path}: observations[{i}].value {value!r}: a feasible "
                             "observation needs a finite number")
    if "surrogate" in data:   # a broken model is refused here, not at first use
        from hpc.campaign.surrogate import load_surrogate

        try:
            load_surrogate(data["surrogate"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"{path}: surrogate does not load: {error}") from None
    return data


def _usable(rows: Iterable[Mapping[str, Any]], space: Any) -> tuple[list[WarmObservation], int]:
    observations, outside = [], 0
    for row in rows:
        params = {k: float(v) for k, v in row["params"].items()}
        if not space.is_valid(params):
            outside += 1
            continue
        observations.append(WarmObservation(params, row["value"], row["noise_var"],
                                            bool(row["feasible"]), str(row["reason"]),
                                            row.get("level_here")))
    return observations, outside


def _row_fidelity(context: Mapping[str, Any], row: Mapping[str, Any]) -> tuple:
    """(n_cubes, cube_voxels, voxel_um) one observation was made at."""
    fidelity = context["fidelity"]
    level, levels = row.get("fidelity_level"), fidelity.get("levels")
    chosen = levels[int(level)] if level is not None and levels else fidelity
    return (chosen["n_cubes"], chosen["cube_voxels"], fidelity["voxel_um"])


def _match_fidelity(context: Mapping[str, Any], here: Mapping[str, Any],
                    rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The rows made at a fidelity this campaign evaluates at, each with `level_here` (its
    index into this campaign's levels; None for a single-fidelity campaign): fidelity is an
    input of the multi-fidelity model, so such observations are modelled, not mixed."""
    levels = here["fidelity"].get("levels")
    targets = ([(lv["n_cubes"], lv["cube_voxels"], here["fidelity"]["voxel_um"]) for lv in levels]
               if levels else [_row_fidelity(here, {})])
    matched, other = [], 0
    for row in rows:
        at = _row_fidelity(context, row)
        if at in targets:
            matched.append({**row, "level_here": targets.index(at) if levels else None})
        else:
            other += 1
    return matched, other


def _load_source(source: Path) -> tuple[dict[str, Any], list[dict[str, Any]], Any, str]:
    """(context, observation rows, surrogate record or None, "") of a campaign folder or an
    observations file, or (..., why not)."""
    if source.is_file():
        try:
            data = read_observations_file(source)
        except ValueError as error:
            return {}, [], None, str(error)
        return data["context"], list(data["observations"]), data.get("surrogate"), ""
    frozen = source / FROZEN_CONFIG
    if not frozen.exists():
        return {}, [], None, f"{source} is not a campaign folder (no {FROZEN_CONFIG})"
    try:
        other = load_frozen_campaign(frozen)
    except ConfigError as error:
        return {}, [], None, f"its campaign.toml does not load: {error}"
    return (campaign_context(other),
            _observations_of(fold_events(read_journal(source)).values()), None, "")


def warm_start_observations(source: Path, config: CampaignConfig, space: Any
                            ) -> tuple[list[WarmObservation], str]:
    """Completed evaluations (feasible or not) of an earlier campaign folder or an exported
    observations file usable here, or ([], why not)."""
    context, rows, _, why = _load_source(Path(source))
    if why:
        return [], why
    here = campaign_context(config)
    allow = set(config.warm_start.allow)
    why = context_difference(context, here, allow | {"fidelity"})
    if why:
        return [], why
    multi = bool(here["fidelity"].get("levels"))
    if multi or "fidelity" not in allow:
        # observations at one of this campaign's fidelities (a level, or its one fidelity)
        rows, _ = _match_fidelity(context, here, list(rows))
        if not rows:
            return [], (context_difference(context, here, allow) if not multi else
                        f"no observation at one of this campaign's fidelity levels "
                        f"{here['fidelity']['levels']} (voxel_um {here['fidelity']['voxel_um']}); "
                        f"the source has {context['fidelity']}")
    observations, outside = _usable(rows, space)
    if not observations:
        return [], ("no completed trials inside this campaign's bounds"
                    + (f" ({outside} outside)" if outside else ""))
    return observations, ""


def source_task(source: Path, config: CampaignConfig, space: Any
                ) -> tuple[dict[str, Any] | None, str]:
    """A source that differs from this campaign in fidelity, generator, power or C-rate as a
    *source task* of the ``botorch_transfer`` back-end (bayes/transfer.py): its exported
    surrogate when the file holds one (used as fitted, no refit), else its feasible
    observations inside this campaign's bounds (top fidelity level only, for a multi-fidelity
    source). (None, why) when it cannot be one: space, fixed values, objective kind or cell
    differ, or too few feasible observations."""
    context, rows, surrogate, why = _load_source(Path(source))
    if why:
        return None, why
    why = context_difference(context, campaign_context(config), ALLOWABLE)
    if why:
        return None, why
    name = str(source)
    if surrogate is not None:
        return {"name": name, "surrogate": surrogate}, ""
    levels = context["fidelity"].get("levels")
    if levels:
        rows = [r for r in rows if r.get("fidelity_level") == len(levels) - 1]
    observations, outside = _usable([r for r in rows if r["feasible"]], space)
    values = {o.value for o in observations}
    if len(values) < 2:
        return None, (f"{len(observations)} feasible observations inside this campaign's bounds"
                      + (f" ({outside} outside)" if outside else "")
                      + ": a source task needs at least two different values")
    return {"name": name, "observations": [[o.params, o.value] for o in observations]}, ""
