"""A case study across optimiser seeds: ``microloop case-study NAME --dir D --seeds 0,1,2``.

One seed's comparison (hpc.analysis.case_studies) says what one optimiser run found; issue 16
asks what survives another seed. This module reads ``D/seed_K/NAME/<member>`` (the layout that
``case-study NAME --dir D/seed_K/NAME --seed K`` writes) for each requested seed that is there and
reports, into ``D/NAME_report/`` (or ``--out``):

- each member's optimum per seed, and the range over seeds of its objective and parameters;
- whether each optimum sits on a bound of the search box (within `BOUND_TOL` of the range);
- the optimum re-characterised on independent, larger cubes (`ConfirmFidelity`, default
  4 x 128^3, new structure seeds): the campaigns score with 2 cubes of 96^3 at 10 W, and the
  confirmation shows whether the optimum's value holds on the sampled volume that converged;
- cs2/cs3: the Ragone curves of the confirmed optima with their spread over seeds, the power
  where the low- and high-power optima cross (an interval over seeds), the discharge time there
  against the 1 h isochrone, and for cs3 the gain of the energy cell over the cs1 design at 10 W;
- per campaign the measured noise of the objective: the relative standard error of each trial's
  objective (its cubes scored one by one, ``objective_spread.rel_std / sqrt(n)``), median and
  max over the trials and near the optimum, against the 2 % target;
- the time each campaign's evaluations took (the trials' own stage timings, single-threaded:
  CPU-hours on an idle machine, an upper bound of them on a loaded one).

Seeds that are missing are listed, not fatal; with one seed present the intervals are points
and the summary says so. The confirmation's evaluations are cached in ``--confirm-dir``
(voxels included: keep it out of version control); rerunning the comparison reuses them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc.analysis.case_studies import (
    COMPARISON_POWERS_W,
    CS1_REFERENCE,
    GAIN_POWER_W,
    Optimum,
    load_optimum,
    ragone_curve,
    refine_crossing_W,
)
from hpc.campaign.folder import FROZEN_CONFIG, REPORT_FOLDER, TABLE_SUMMARY_NAME, TRIALS_NAME

#: the issue's target for the objective's noise: relative standard error of a design's value
SPREAD_TARGET = 0.02
#: an optimum within this share of a parameter's range from a bound "sits on the bound"
BOUND_TOL = 0.02
#: "near the optimum": the best this many feasible trials of a campaign
NEAR_OPTIMUM_N = 5
#: the isochrone the paper compares the crossing with
ISOCHRONE_H = 1.0
#: added to a campaign's seed for the confirmation's cubes, so they are new structures
CONFIRM_SEED_OFFSET = 7919
SEED_FOLDER = "seed_{seed}"
DEFAULT_SEEDS = (0, 1, 2)


def seed_folder(directory: str | Path, seed: int, name: str) -> Path:
    """Where seed `seed` of case study `name` lives: ``D/seed_K/NAME``."""
    return Path(directory) / SEED_FOLDER.format(seed=int(seed)) / name


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> (0, 1, 2); ValueError naming --seeds for anything else."""
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip() != "")
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers >= 0 such as 0,1,2; "
                         f"got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct integers >= 0 such as 0,1,2; got {text!r}")
    return seeds


# ---- typed results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfirmFidelity:
    """The sampled volume an optimum is re-characterised on: `n_cubes` new cubes of
    `cube_voxels`^3 (the campaign's voxel size and solver). n_cubes = 0 skips it."""

    n_cubes: int = 4
    cube_voxels: int = 128

    def __post_init__(self) -> None:
        if not (isinstance(self.n_cubes, int) and self.n_cubes >= 0):
            raise ValueError(f"--confirm-cubes must be an integer >= 0 (0 = no confirmation); "
                             f"got {self.n_cubes!r}")
        if not (isinstance(self.cube_voxels, int) and self.cube_voxels >= 8):
            raise ValueError(f"--confirm-voxels must be an integer >= 8; got {self.cube_voxels!r}")

    @property
    def enabled(self) -> bool:
        return self.n_cubes > 0

    @property
    def label(self) -> str:
        return f"{self.n_cubes} x {self.cube_voxels}^3"


@dataclass(frozen=True)
class Interval:
    """A quantity over seeds: its values (in seed order), their min and max; None when no seed
    gave one."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def low(self) -> float | None:
        return min(self.values) if self.values else None

    @property
    def high(self) -> float | None:
        return max(self.values) if self.values else None

    @classmethod
    def of(cls, pairs: list[tuple[int, float | None]]) -> Interval:
        kept = [(s, float(v)) for s, v in pairs if v is not None and math.isfinite(v)]
        return cls(tuple(s for s, _ in kept), tuple(v for _, v in kept))

    def text(self, fmt: str = ".1f", unit: str = "") -> str:
        if not self.values:
            return "n/a"
        unit = f" {unit}" if unit else ""
        seeds = "seed " + ",".join(str(s) for s in self.seeds)
        if len(self.values) == 1 or self.low == self.high:
            return f"{self.low:{fmt}}{unit} ({seeds})"
        return f"{self.low:{fmt}} – {self.high:{fmt}}{unit} ({seeds})"

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "seeds": list(self.seeds),
                "values": list(self.values)}


@dataclass(frozen=True)
class BoundCheck:
    """Where one parameter of an optimum sits in its search range."""

    parameter: str
    value: float
    low: float
    high: float
    #: "low", "high" or None (interior)
    at: str | None


@dataclass(frozen=True)
class NoiseCheck:
    """The measured noise of one campaign's objective: each trial's relative standard error
    (its cubes scored on their own: rel_std / sqrt(n)) over the trials, and near the optimum."""

    n_trials: int
    median: float | None
    max: float | None
    best_trial: float | None
    near_optimum_max: float | None
    target: float = SPREAD_TARGET
    note: str = ""

    @property
    def meets_target(self) -> bool | None:
        """Near the optimum (where the answer is read) the noise is within the target."""
        return None if self.near_optimum_max is None else self.near_optimum_max <= self.target


@dataclass(frozen=True)
class Confirmation:
    """An optimum re-characterised at the `ConfirmFidelity` (jobs.evaluate on new cubes)."""

    fidelity: str
    objective: float | None
    feasible: bool
    reason: str
    per_cube: tuple[float | None, ...]
    rel_sem: float | None
    design: dict[str, float | None] | None
    work_s: float

    def relative_change(self, campaign_value: float) -> float | None:
        """(confirmed - campaign) / campaign: how far the campaign's own value was off."""
        if self.objective is None or campaign_value == 0:
            return None
        return (self.objective - campaign_value) / campaign_value


@dataclass(frozen=True)
class MemberSeed:
    """One member campaign of one seed: its optimum and how it was measured."""

    seed: int
    campaign: str
    #: the campaign folder relative to DIR (seed_K/NAME/<campaign>)
    folder: str
    operating_point: str
    objective_kind: str
    fidelity: str
    budget: int
    n_complete: int
    n_finished: int
    best_trial_id: int | None
    objective: float | None
    params: dict[str, float]
    bounds: tuple[BoundCheck, ...]
    noise: NoiseCheck
    work_s: float
    confirmation: Confirmation | None = None

    @property
    def finished(self) -> bool:
        return self.n_finished >= self.budget

    @property
    def on_bounds(self) -> dict[str, str]:
        return {b.parameter: b.at for b in self.bounds if b.at is not None}


@dataclass(frozen=True)
class RagoneBand:
    """One role's Ragone curve (the same member's confirmed optimum in each seed) on one
    power grid: the curve per seed and its min/max over seeds (0 = cannot deliver)."""

    label: str
    campaign: str
    quantity: str
    powers_W: tuple[float, ...]
    per_seed: dict[int, tuple[float, ...]]
    cell_volume_L: float | None
    cell_mass_kg: float | None

    @property
    def low(self) -> tuple[float, ...]:
        return tuple(float(min(c[i] for c in self.per_seed.values()))
                     for i in range(len(self.powers_W)))

    @property
    def high(self) -> tuple[float, ...]:
        return tuple(float(max(c[i] for c in self.per_seed.values()))
                     for i in range(len(self.powers_W)))


@dataclass(frozen=True)
class CrossingAtSeed:
    """Where one seed's low-power optimum falls below its high-power optimum."""

    seed: int
    power_W: float | None
    #: discharge time of each design at the crossing power (h): energy_Wh / power
    discharge_time_h: dict[str, float | None]
    #: the same crossing from the designs as the campaign measured them (its own fidelity)
    power_W_campaign_fidelity: float | None


@dataclass(frozen=True)
class SeedComparison:
    """The case study across seeds (what summary.json holds)."""

    case_study: str
    #: DIR's own name only: the summary is committed, and names no folder of the machine
    directory: str
    seeds_requested: tuple[int, ...]
    seeds_present: tuple[int, ...]
    seeds_missing: dict[int, str]
    confirm: ConfirmFidelity
    members: dict[str, tuple[MemberSeed, ...]]
    objective_range: dict[str, Interval]
    confirmed_range: dict[str, Interval]
    param_range: dict[str, dict[str, Interval]]
    ragone: tuple[RagoneBand, ...] = ()
    crossings: tuple[CrossingAtSeed, ...] = ()
    crossing_W: Interval | None = None
    discharge_time_at_crossing_h: Interval | None = None
    gain_over_cs1_percent: Interval | None = None
    gain_power_W: float = GAIN_POWER_W
    work_hours: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Interval):
                return value.to_dict()
            if isinstance(value, NoiseCheck):
                return {**dataclasses.asdict(value), "meets_target": value.meets_target}
            if isinstance(value, RagoneBand):
                return {**{k: plain(v) for k, v in dataclasses.asdict(value).items()},
                        "low": list(value.low), "high": list(value.high),
                        "per_seed": {str(k): list(v) for k, v in value.per_seed.items()}}
            if isinstance(value, MemberSeed):
                out = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
                return {**out, "finished": value.finished, "on_bounds": value.on_bounds}
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        return {"schema": "microloop.case_study_seeds/1", **plain(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}),
            "confirm": dataclasses.asdict(self.confirm)}


# ---- reading one member of one seed -----------------------------------------------------------


def bound_checks(params: dict[str, float], bounds: dict[str, tuple[float, float]],
                 tol: float = BOUND_TOL) -> tuple[BoundCheck, ...]:
    """Each varied parameter's place in its range: "low"/"high" within `tol` of the range."""
    out = []
    for name, (low, high) in bounds.items():
        if name not in params:
            continue
        value, width = float(params[name]), high - low
        at = ("low" if value - low <= tol * width else
              "high" if high - value <= tol * width else None)
        out.append(BoundCheck(name, value, low, high, at))
    return tuple(out)


def noise_check(data: Any) -> NoiseCheck:
    """`NoiseCheck` of a campaign (hpc.analysis.report.CampaignData)."""
    def rel_sem(trial: Any) -> float | None:
        spread = trial.result.objective_spread if trial.result is not None else None
        if spread is None or spread.rel_std is None or spread.n < 2:
            return None
        return float(spread.rel_std) / math.sqrt(spread.n)

    ranked = sorted(data.complete, key=lambda t: (-t.objective, t.trial_id))
    measured = [(t, rel_sem(t)) for t in ranked]
    values = [v for _, v in measured if v is not None]
    near = [v for _, v in measured[:NEAR_OPTIMUM_N] if v is not None]
    note = ""
    if not values:
        note = ("no trial carries a measured spread (one cube per design, or "
                "objective.noise_from_samples off)")
    return NoiseCheck(
        n_trials=len(values), median=statistics.median(values) if values else None,
        max=max(values) if values else None,
        best_trial=measured[0][1] if measured else None,
        near_optimum_max=max(near) if near else None, note=note)


def _fidelity_label(config: dict[str, Any]) -> str:
    f = config.get("fidelity", {})
    return (f"{f.get('n_cubes')} x {f.get('cube_voxels')}^3 at {f.get('voxel_um')} um, "
            f"{f.get('backend')}")


def confirmation_spec(folder: Path, confirm: ConfirmFidelity) -> dict[str, Any]:
    """The campaign's evaluation spec at the confirmation fidelity: new cubes (seed offset),
    each also scored on its own, no Ragone sweep (the comparison sweeps the design itself)."""
    from hpc.campaign.config import load_frozen_campaign

    spec = load_frozen_campaign(folder / FROZEN_CONFIG).to_spec_dict()
    spec["fidelity"] = {**spec["fidelity"], "n_cubes": confirm.n_cubes,
                        "cube_voxels": confirm.cube_voxels}
    spec["objective"] = {**spec["objective"], "noise_from_samples": True}
    spec["cell"] = {**spec["cell"], "ragone_powers_W": []}
    spec["seed"] = int(spec["seed"]) + CONFIRM_SEED_OFFSET
    return spec


def confirm_optimum(folder: Path, trial_id: int, params: dict[str, float],
                    confirm: ConfirmFidelity, cache: Path) -> Confirmation:
    """Evaluate the optimum again on new cubes (cached in `cache`: a finished evaluation is
    read back, jobs.evaluate is idempotent)."""
    from jobs.evaluate import evaluate

    result = evaluate(cache, trial_id, params, confirmation_spec(folder, confirm))
    spread = result.objective_spread
    rel_sem = (spread.rel_std / math.sqrt(spread.n)
               if spread is not None and spread.rel_std is not None and spread.n >= 2 else None)
    return Confirmation(
        fidelity=confirm.label, objective=result.objective.value,
        feasible=bool(result.objective.feasible),
        reason=result.objective.infeasible_reason or "",
        per_cube=tuple(spread.per_sample) if spread is not None else (),
        rel_sem=rel_sem, design=result.cell.design if result.cell is not None else None,
        work_s=float(result.timings_s.total_s))


def read_member(seed: int, folder: Path, confirm: ConfirmFidelity, cache: Path | None
                ) -> tuple[MemberSeed, Optimum | None]:
    """One member of one seed, and its optimum (the confirmed design when confirmed)."""
    import tomllib

    from hpc.analysis.report import load_campaign_data

    data = load_campaign_data(folder)
    config = tomllib.loads((folder / FROZEN_CONFIG).read_text())
    best = data.best()
    optimum = load_optimum(folder)
    confirmation = None
    n_finished = sum(1 for t in data.trials if t.status in ("complete", "failed"))
    # a running campaign's best is provisional: confirming it would spend minutes per optimum
    # on a design the campaign may still replace, so it keeps its own measurement until then
    if best is not None and confirm.enabled and cache is not None and n_finished >= data.budget:
        confirmation = confirm_optimum(folder, best.trial_id, dict(best.params), confirm, cache)
        if optimum is not None and confirmation.design is not None:
            optimum = dataclasses.replace(optimum, design=confirmation.design)
    work_s = sum(float(t.result.timings_s.total_s) for t in data.trials if t.result is not None)
    member = MemberSeed(
        seed=seed, campaign=data.name, folder=str(folder), operating_point=data.operating_point,
        objective_kind=str(data.objective.get("kind")), fidelity=_fidelity_label(config),
        budget=data.budget, n_complete=len(data.complete),
        n_finished=n_finished,
        best_trial_id=best.trial_id if best is not None else None,
        objective=best.objective if best is not None else None,
        params=dict(best.params) if best is not None else {},
        bounds=bound_checks(dict(best.params), data.bounds) if best is not None else (),
        noise=noise_check(data), work_s=work_s, confirmation=confirmation)
    return member, optimum


# ---- the comparison ---------------------------------------------------------------------------


def _curve(optimum: Optimum, powers_W: tuple[float, ...], quantity: str
           ) -> tuple[tuple[float, ...], float | None, float | None]:
    """(quantity per power, cell volume L, cell mass kg) of an optimum built as a 4680."""
    curve = ragone_curve(optimum, powers_W)
    values = tuple(float(r.get(quantity) or 0.0) if r.get("feasible") else 0.0 for r in curve)
    feasible = [r for r in curve if r.get("feasible") and float(r.get("energy_Wh") or 0) > 0]
    if not feasible:
        return values, None, None
    r = feasible[0]
    return (values, float(r["energy_Wh"]) / float(r["energy_density_Wh_L"]),
            float(r["energy_Wh"]) / float(r["specific_energy_Wh_kg"]))


def _crossing(low: Optimum, high: Optimum, powers_W: tuple[float, ...], quantity: str,
              low_curve: tuple[float, ...], high_curve: tuple[float, ...]) -> float | None:
    """The swept curves' first crossing, refined by bisection in log power."""
    from hpc.analysis.report import find_crossing_W

    grid = find_crossing_W(np.array(powers_W), np.array(low_curve), np.array(high_curve))
    if grid is None:
        return None
    k = int(np.searchsorted(np.array(powers_W), grid))
    bracket = (powers_W[max(k - 1, 0)], powers_W[min(k, len(powers_W) - 1)])
    if bracket[0] == bracket[1]:
        return grid
    return refine_crossing_W(low, high, *bracket, quantity=quantity)


def _discharge_time_h(optimum: Optimum, power_W: float) -> float | None:
    record = ragone_curve(optimum, [power_W])[0]
    if not record.get("feasible") or not record.get("energy_Wh"):
        return None
    return float(record["energy_Wh"]) / float(power_W)


def _quantity(name: str) -> str:
    return "specific_energy_Wh_kg" if name == "cs2" else "energy_density_Wh_L"


ROLE_LABELS = {"cs3": "energy cell (optimum at 10 W)", "cs3_power": "power cell (optimum at 200 W)",
               "cs2": "optimum at 10 W", "cs2_high": "optimum at 200 W",
               CS1_REFERENCE: "cs1 optimum (1C half cell) as a 4680"}


def confirm_cache_root(out: Path, confirm: ConfirmFidelity, confirm_dir: str | Path | None
                       ) -> Path:
    """Where the confirmations of fidelity `confirm` are cached (default ``OUT/confirm``)."""
    root = Path(confirm_dir) if confirm_dir is not None else Path(out) / "confirm"
    return root / f"{confirm.n_cubes}x{confirm.cube_voxels}"


def compare_seeds(name: str, directory: str | Path, seeds: tuple[int, ...] = DEFAULT_SEEDS,
                  out: str | Path | None = None, confirm: ConfirmFidelity | None = None,
                  confirm_dir: str | Path | None = None,
                  powers_W: tuple[float, ...] = COMPARISON_POWERS_W) -> SeedComparison:
    """Compare case study `name` over `seeds` (``D/seed_K/NAME``); write summary.md,
    summary.json, plots and the compact per-campaign data (trials.csv, the campaign report's
    summary.json) into `out` (default ``D/NAME_report``); returns the typed comparison."""
    from hpc.analysis.case_studies import _check_name

    members = _check_name(name)
    directory = Path(directory)
    confirm = ConfirmFidelity() if confirm is None else confirm
    out = Path(out) if out is not None else directory / f"{name}_report"
    if not any((seed_folder(directory, seed, name) / m / FROZEN_CONFIG).exists()
               for seed in seeds for m in members):
        # checked before anything is written: an empty report folder looks like a result
        raise FileNotFoundError(
            f"no run of case study {name} for seeds {', '.join(str(s) for s in seeds)} in "
            f"{directory}: looked for {directory / SEED_FOLDER.format(seed='K') / name}/"
            f"<{'|'.join(members)}>/{FROZEN_CONFIG} (run `microloop case-study {name} --dir "
            f"{directory / SEED_FOLDER.format(seed='K') / name} --seed K` first)")
    out.mkdir(parents=True, exist_ok=True)
    cache_root = confirm_cache_root(out, confirm, confirm_dir)
    def rel(path: Path) -> str:
        """A path as the summary records it: relative to DIR, so the committed summaries
        name no folder of the machine that ran them."""
        try:
            return Path(path).relative_to(directory).as_posix()
        except ValueError:
            return Path(path).as_posix()

    notes: list[str] = []
    present: list[int] = []
    missing: dict[int, str] = {}
    per_member: dict[str, list[MemberSeed]] = {m: [] for m in members}
    optima: dict[tuple[int, str], Optimum] = {}
    for seed in seeds:
        study = seed_folder(directory, seed, name)
        found = [m for m in members if (study / m / FROZEN_CONFIG).exists()]
        if not found:
            missing[seed] = f"no member campaign in DIR/{rel(study)}"
            continue
        present.append(seed)
        for m in members:
            if m not in found:
                notes.append(f"seed {seed}: {m} has not started (DIR/{rel(study / m)} missing).")
                continue
            member, optimum = read_member(seed, study / m, confirm,
                                          cache_root / f"seed_{seed}" / name / m)
            per_member[m].append(dataclasses.replace(member, folder=rel(study / m)))
            if optimum is not None:
                optima[(seed, m)] = optimum
            if not member.finished:
                notes.append(f"seed {seed}: {m} is still running ({member.n_finished} of "
                             f"{member.budget} evaluations): its optimum is provisional and "
                             "not confirmed (the campaign's own measurement is used).")
        if name == "cs3":
            ref = seed_folder(directory, seed, "cs1") / CS1_REFERENCE
            if (ref / FROZEN_CONFIG).exists():
                member, optimum = read_member(seed, ref, confirm,
                                              cache_root / f"seed_{seed}" / "cs1" / CS1_REFERENCE)
                if optimum is not None:
                    optima[(seed, CS1_REFERENCE)] = optimum
                if not member.finished:
                    notes.append(f"seed {seed}: the cs1 reference is still running "
                                 f"({member.n_finished} of {member.budget}): provisional, "
                                 "not confirmed.")
            else:
                notes.append(f"seed {seed}: no cs1 campaign of this seed (DIR/{rel(ref)}): no "
                             "gain over the cs1 design for it.")
    if len(present) == 1:
        notes.insert(0, f"Only seed {present[0]} is present: every interval below is one "
                        "seed's value, not a spread over seeds.")

    objective_range = {m: Interval.of([(r.seed, r.objective) for r in rs])
                       for m, rs in per_member.items()}
    confirmed_range = {m: Interval.of([(r.seed, r.confirmation.objective if r.confirmation
                                        else None) for r in rs]) for m, rs in per_member.items()}
    param_range = {m: {p: Interval.of([(r.seed, r.params.get(p)) for r in rs])
                       for p in sorted({p for r in rs for p in r.params})}
                   for m, rs in per_member.items()}
    work_hours = {m: sum(r.work_s for r in rs) / 3600.0 for m, rs in per_member.items()}

    bands: list[RagoneBand] = []
    crossings: list[CrossingAtSeed] = []
    gains: list[tuple[int, float | None]] = []
    if name in ("cs2", "cs3"):
        quantity = _quantity(name)
        roles = list(members) + ([CS1_REFERENCE] if name == "cs3" else [])
        curves: dict[str, dict[int, tuple[float, ...]]] = {r: {} for r in roles}
        sizes: dict[str, tuple[float | None, float | None]] = {}
        for (seed, role), optimum in sorted(optima.items()):
            if optimum.design is None:
                notes.append(f"seed {seed}: {role} has no cell design to sweep.")
                continue
            values, volume, mass = _curve(optimum, powers_W, quantity)
            curves[role][seed] = values
            sizes.setdefault(role, (volume, mass))
        for role in roles:
            if curves[role]:
                volume, mass = sizes[role]
                bands.append(RagoneBand(ROLE_LABELS.get(role, role), role, quantity,
                                        tuple(powers_W), dict(curves[role]), volume, mass))
        low_m, high_m = members[0], members[1]
        for seed in present:
            if seed not in curves[low_m] or seed not in curves[high_m]:
                continue
            low, high = optima[(seed, low_m)], optima[(seed, high_m)]
            power = _crossing(low, high, powers_W, quantity, curves[low_m][seed],
                              curves[high_m][seed])
            times = ({low_m: _discharge_time_h(low, power), high_m: _discharge_time_h(high, power)}
                     if power is not None else {low_m: None, high_m: None})
            campaign_power = None
            if confirm.enabled:   # the same crossing from the campaign's own measurements
                raw = [load_optimum(seed_folder(directory, seed, name) / m) for m in (low_m, high_m)]
                if all(o is not None and o.design is not None for o in raw):
                    raw_curves = [_curve(o, powers_W, quantity)[0] for o in raw]
                    campaign_power = _crossing(raw[0], raw[1], powers_W, quantity, *raw_curves)
            else:
                campaign_power = power
            crossings.append(CrossingAtSeed(seed, power, times, campaign_power))
            if power is None:
                notes.append(f"seed {seed}: the {low_m} optimum stays above the {high_m} optimum "
                             f"from {powers_W[0]:g} to {powers_W[-1]:g} W (no crossing).")
            if name == "cs3" and seed in curves[CS1_REFERENCE] and GAIN_POWER_W in powers_W:
                i = list(powers_W).index(GAIN_POWER_W)
                energy, ref = curves[low_m][seed][i], curves[CS1_REFERENCE][seed][i]
                gains.append((seed, 100.0 * (energy - ref) / ref if ref > 0 else None))
    crossing_W = Interval.of([(c.seed, c.power_W) for c in crossings]) if crossings else None
    times_h = (Interval.of([(c.seed, c.discharge_time_h.get(members[0])) for c in crossings])
               if crossings else None)
    comparison = SeedComparison(
        case_study=name, directory=directory.name, seeds_requested=tuple(seeds),
        seeds_present=tuple(present), seeds_missing=missing, confirm=confirm,
        members={m: tuple(rs) for m, rs in per_member.items()},
        objective_range=objective_range, confirmed_range=confirmed_range,
        param_range=param_range, ragone=tuple(bands), crossings=tuple(crossings),
        crossing_W=crossing_W, discharge_time_at_crossing_h=times_h,
        gain_over_cs1_percent=Interval.of(gains) if name == "cs3" else None,
        work_hours=work_hours, notes=tuple(notes))
    plots = _plots(comparison, out)
    comparison = dataclasses.replace(comparison, plots=tuple(p.name for p in plots))
    _export_data(comparison, directory, out)
    from jobs.store import json_safe, write_text_atomic

    write_text_atomic(out / "summary.json", json.dumps(json_safe(comparison.to_dict()), indent=1))
    write_text_atomic(out / "summary.md", seeds_markdown(comparison))
    return comparison


def _export_data(comparison: SeedComparison, comparison_dir: Path, out: Path) -> None:
    """The compact results the summary rests on, per seed and campaign: trials.csv and the
    campaign report's summary.json (no voxels), so a reader can check every number."""
    for records in comparison.members.values():
        for r in records:
            source = Path(comparison_dir) / r.folder
            target = out / f"seed_{r.seed}" / r.campaign
            target.mkdir(parents=True, exist_ok=True)
            for name, copy_as in ((TRIALS_NAME, TRIALS_NAME),
                                  (f"{REPORT_FOLDER}/summary.json", TABLE_SUMMARY_NAME)):
                if (source / name).exists():
                    shutil.copyfile(source / name, target / copy_as)


# ---- plots and markdown -----------------------------------------------------------------------


def _cell_size(band: RagoneBand) -> float | None:
    """What a power is divided by on the literature's axes: the cell's volume (L) beside an
    energy density, its mass (kg) beside a specific energy."""
    return band.cell_volume_L if band.quantity == "energy_density_Wh_L" else band.cell_mass_kg


def literature_power(band: RagoneBand) -> np.ndarray:
    """A band's powers per cell as W/L or W/kg (the literature's Ragone axes), so the x and y
    of the plot are per the same volume or mass; per cell when the band has no size (no
    feasible point: nothing of it is drawn)."""
    size = _cell_size(band)
    return np.array(band.powers_W) / (size or 1.0)


def _plots(c: SeedComparison, out: Path) -> list[Path]:
    from hpc.analysis.report import _pyplot, plain_log_axis, save_figure_atomic

    plots: list[Path] = []
    plt = _pyplot()
    if c.ragone:
        fig, ax = plt.subplots(figsize=(7.0, 4.8))
        quantity = c.ragone[0].quantity
        for k, band in enumerate(c.ragone):
            p = literature_power(band)
            low, high = np.array(band.low), np.array(band.high)
            ok = high > 0
            ax.fill_between(p[ok], np.maximum(low[ok], 1e-3), high[ok], color=f"C{k}", alpha=0.25)
            for seed, curve in band.per_seed.items():
                y = np.array(curve)
                keep = y > 0
                ax.plot(p[keep], y[keep], "o-", color=f"C{k}", ms=3, lw=1,
                        label=band.label if seed == min(band.per_seed) else None)
        first = c.ragone[0]
        size = _cell_size(first)
        if size:     # in literature units the isochrone is energy = power x time, any cell
            p = np.geomspace(min(first.powers_W), max(first.powers_W), 50) / size
            iso = p * ISOCHRONE_H
            top = max(max(b.high) for b in c.ragone) * 1.3
            keep = iso <= top
            ax.plot(p[keep], iso[keep], "k--", lw=0.8, label=f"{ISOCHRONE_H:g} h discharge")
        if c.crossing_W is not None and c.crossing_W.values and size:
            lo, hi = c.crossing_W.low / size, c.crossing_W.high / size
            ax.axvspan(lo * 0.98, hi * 1.02, color="0.5", alpha=0.25,
                       label=f"crossing, per cell: {c.crossing_W.text('.0f', 'W')}")
        for axis, scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
            plain_log_axis(axis, scale)   # plain numbers, as the campaign report's Ragone
        ax.set_xlabel("power density (W/L of the 4680 cell)" if quantity == "energy_density_Wh_L"
                      else "specific power (W/kg of the 4680 cell)")
        ax.set_ylabel("energy density (Wh/L)" if quantity == "energy_density_Wh_L"
                      else "specific energy (Wh/kg)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        seeds = ",".join(str(s) for s in c.seeds_present)
        ax.set_title(f"{c.case_study}: Ragone curves of the optima at {c.confirm.label} "
                     f"(band = seeds {seeds})" if c.confirm.enabled else
                     f"{c.case_study}: Ragone curves of the optima (band = seeds {seeds})",
                     fontsize=9)
        fig.tight_layout()
        path = out / f"{c.case_study}_seeds_ragone.png"
        save_figure_atomic(fig, path)
        plt.close(fig)
        plots.append(path)
    if c.case_study == "cs1" and any(c.members.values()):
        rows = [(rs[0].campaign, rs) for rs in c.members.values() if rs]
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6))
        for k, (campaign, rs) in enumerate(rows):
            rate = _c_rate(campaign)
            axes[0].plot([rate] * len(rs), [r.objective for r in rs], "o", color="C0")
            for r in rs:
                axes[1].plot(rate, r.params.get("am_wt_frac", math.nan), "o", color="C1",
                             label="AM weight fraction" if k == 0 and r is rs[0] else None)
                axes[1].plot(rate, r.params.get("porosity", math.nan), "s", color="C2",
                             label="porosity" if k == 0 and r is rs[0] else None)
        c_rates = tuple(sorted({_c_rate(campaign) for campaign, _ in rows}))
        for ax in axes:
            plain_log_axis(ax.xaxis, ax.set_xscale, c_rates)
            ax.set_xlabel("C-rate (1/h)")
            ax.grid(True, alpha=0.3)
        axes[0].set_ylabel("best capacity (mAh/g AM)")
        axes[1].set_ylabel("optimal value (-)")
        axes[1].legend(fontsize=8)
        seeds = ",".join(str(s) for s in c.seeds_present)
        fig.suptitle(f"cs1: half-cell optimum per C-rate, one point per seed ({seeds})",
                     fontsize=10)
        fig.tight_layout()
        path = out / "cs1_seeds_optima.png"
        save_figure_atomic(fig, path)
        plt.close(fig)
        plots.append(path)
    return plots


def _c_rate(campaign: str) -> float:
    rates = {"cs1_0p1C": 0.1, "cs1_0p5C": 0.5, "cs1": 1.0, "cs1_2C": 2.0, "cs1_3C": 3.0}
    return rates.get(campaign, math.nan)


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def seeds_markdown(c: SeedComparison) -> str:
    """The summary.md of a cross-seed comparison."""
    from hpc.analysis.report import markdown_table

    seeds = ", ".join(str(s) for s in c.seeds_present) or "none"
    lines = [f"# Case study {c.case_study} across optimiser seeds", "",
             f"Seeds present: {seeds} (requested: {', '.join(str(s) for s in c.seeds_requested)}).",
             ""]
    if c.seeds_missing:
        lines += [f"- seed {s}: missing ({why})" for s, why in c.seeds_missing.items()] + [""]
    if c.confirm.enabled:
        lines += [f"Each optimum is re-characterised on {c.confirm.label} new cubes (structure "
                  f"seed + {CONFIRM_SEED_OFFSET}); the Ragone curves, the crossing and the gain "
                  "use these confirmed designs.", ""]
    params = sorted({p for rs in c.members.values() for r in rs for p in r.params})
    rows = []
    for m, rs in c.members.items():
        for r in rs:
            conf = r.confirmation
            rows.append({
                "campaign": m, "seed": r.seed, "at": r.operating_point,
                "evaluations": f"{r.n_finished}/{r.budget}" + ("" if r.finished else " (running)"),
                "best": r.objective,
                "confirmed": None if conf is None else conf.objective,
                "change": None if conf is None or r.objective is None else
                _pct(conf.relative_change(r.objective), 1),
                **{p: r.params.get(p) for p in params},
                "on a bound": ", ".join(f"{p} {at}" for p, at in r.on_bounds.items()) or "none"})
    if rows:
        lines += ["## Optimum per seed", "", markdown_table(
            rows, ["campaign", "seed", "at", "evaluations", "best", "confirmed", "change",
                   *params, "on a bound"]), ""]
        rng = [{"campaign": m, "best (range over seeds)": c.objective_range[m].text(".1f"),
                "confirmed": c.confirmed_range[m].text(".1f"),
                **{p: c.param_range[m][p].text(".3g") for p in params if p in c.param_range[m]}}
               for m in c.members if c.members[m]]
        lines += ["## Range over seeds", "", markdown_table(
            rng, ["campaign", "best (range over seeds)", "confirmed", *params]), ""]
    if c.crossing_W is not None:
        lines += ["## Crossing", "",
                  f"- The high-power optimum overtakes the low-power one at "
                  f"{c.crossing_W.text('.1f', 'W')} per cell.",
                  f"- Discharge time there: {c.discharge_time_at_crossing_h.text('.2f', 'h')}"
                  f" (the {ISOCHRONE_H:g} h isochrone is the paper's reference)."]
        for x in c.crossings:
            times = ", ".join(f"{k} {v:.2f} h" if v is not None else f"{k} n/a"
                              for k, v in x.discharge_time_h.items())
            raw = ("n/a" if x.power_W_campaign_fidelity is None
                   else f"{x.power_W_campaign_fidelity:.1f} W")
            lines.append(f"  - seed {x.seed}: " + ("no crossing" if x.power_W is None else
                         f"{x.power_W:.1f} W ({times}); from the campaigns' own designs: {raw}"))
        lines.append("")
    if c.gain_over_cs1_percent is not None:
        lines += [f"- Energy cell over the cs1 design built as a 4680, at {c.gain_power_W:g} W: "
                  + (c.gain_over_cs1_percent.text("+.1f", "%")), ""]
    if c.ragone:
        quantity = c.ragone[0].quantity
        powers = c.ragone[0].powers_W
        table = [{"power_W": p, **{b.label: (f"{b.low[i]:.1f}" if b.low[i] == b.high[i] else
                                             f"{b.low[i]:.1f} – {b.high[i]:.1f}")
                                   for b in c.ragone}} for i, p in enumerate(powers)]
        lines += [f"## Ragone curves ({quantity}, range over seeds; 0 = cannot deliver)", "",
                  markdown_table(table, ["power_W", *[b.label for b in c.ragone]]), ""]
    noise_rows = []
    for m, rs in c.members.items():
        for r in rs:
            n = r.noise
            noise_rows.append({
                "campaign": m, "seed": r.seed, "trials measured": n.n_trials,
                "median": _pct(n.median), "max": _pct(n.max), "best trial": _pct(n.best_trial),
                f"best {NEAR_OPTIMUM_N} (max)": _pct(n.near_optimum_max),
                f"<= {100 * SPREAD_TARGET:g} % near the optimum": {True: "yes", False: "NO",
                                                                   None: "n/a"}[n.meets_target],
                "confirmation": "n/a" if r.confirmation is None else _pct(r.confirmation.rel_sem),
                "fidelity": r.fidelity, "evaluation time (h)": f"{r.work_s / 3600:.2f}"})
    if noise_rows:
        lines += ["## Measured noise of the objective (relative standard error, rel_std/sqrt(n))",
                  "", markdown_table(noise_rows, list(noise_rows[0])), ""]
        total = sum(c.work_hours.values())
        lines += [f"Evaluation time of the campaigns (sum of the trials' stage timings, each "
                  f"evaluation single-threaded): {total:.2f} h over {len(c.seeds_present)} "
                  "seed(s). These are wall seconds inside each evaluation: on an idle machine "
                  "they are its CPU time, on a loaded one an upper bound of it.", ""]
    lines += [f"![{p}]({p})\n" for p in c.plots]
    if c.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in c.notes]
    return "\n".join(lines) + "\n"
