"""The paper's three case studies: their campaigns, running them, and comparing their optima.

A case study is a set of built-in campaigns (``hpc/campaigns/<name>.toml``) run into one folder,
one sub-folder per campaign, followed by a comparison written to ``<folder>/report/``:

- cs1 (half cell, mAh/g at 0.1/0.5/1/2/3C): the optimum and the optimal design per C-rate.
- cs2 (4680, Wh/kg at 10 W and 200 W): both optima and their Ragone curves (Wh/kg).
- cs3 (4680, Wh/L at 10 W "energy cell" and 200 W "power cell"): the Ragone curves (Wh/L) of
  both optima and of the cs1 (1C) optimum built as a 4680 cell, the power where the energy and
  power cells cross, and the gain of the energy cell over the cs1 design at 10 W.

The Ragone curves of the optima are recomputed here on one power grid (the campaigns' own sweeps
may be coarser or absent) with the same cell model the campaigns scored with.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import numpy as np

from hpc.campaign.folder import FROZEN_CONFIG, REPORT_FOLDER

log = logging.getLogger(__name__)

CASE_STUDIES: dict[str, tuple[str, ...]] = {
    "cs1": ("cs1_0p1C", "cs1_0p5C", "cs1", "cs1_2C", "cs1_3C"),
    "cs2": ("cs2", "cs2_high"),
    "cs3": ("cs3", "cs3_power"),
}
#: the campaign of cs1 whose optimum cs3 builds as a 4680 cell
CS1_REFERENCE = "cs1"
COMPARISON_POWERS_W = (5.0, 10.0, 20.0, 50.0, 100.0, 150.0, 200.0, 300.0, 500.0, 800.0)
GAIN_POWER_W = 10.0
#: `<case study>/report/summary.json` (docs/formats.md)
CASE_STUDY_SCHEMA_VERSION = "microloop.case-study/1"
#: The literature Ragone quantities stored per curve in summary.json (per kg and per L of cell).
RAGONE_KEYS = ("specific_power_W_kg", "specific_energy_Wh_kg", "power_density_W_L",
               "energy_density_Wh_L")


def campaign_file(name: str) -> Path:
    """The TOML file of a built-in campaign (any of CASE_STUDIES' members, or quick)."""
    known = sorted({n for names in CASE_STUDIES.values() for n in names} | {"quick"})
    if name not in known:
        raise ValueError(f"unknown built-in campaign {name!r}; known: {', '.join(known)}")
    return Path(str(importlib_resources.files("hpc.campaigns") / f"{name}.toml"))


def _check_name(name: str) -> tuple[str, ...]:
    if name not in CASE_STUDIES:
        raise ValueError(f"unknown case study {name!r}; choose one of {', '.join(CASE_STUDIES)}")
    return CASE_STUDIES[name]


def run_case_study(name: str, directory: str | Path,
                   overrides: dict[str, dict[str, Any]] | None = None,
                   cs1_dir: str | Path | None = None,
                   on_progress: Callable[[Any], None] | None = None,
                   powers_W: tuple[float, ...] = COMPARISON_POWERS_W,
                   profile: str | None = None) -> dict[str, Any]:
    """Run (or resume, or skip when finished) every campaign of case study `name` into
    ``<directory>/<campaign>``, then compare them; returns the comparison summary.

    `overrides` ({"optimizer": {"budget": 4}, ...}) apply to new campaigns only: a folder that
    already holds a campaign continues with its frozen config. `profile` names a
    ``[profiles.<name>]`` variant of every member file (e.g. "paper").
    """
    from hpc.analysis.report import write_report
    from hpc.campaign.config import load_campaign
    from hpc.campaign.controller import Campaign
    from hpc.campaign.journal import read_journal

    directory = Path(directory)
    for campaign_name in _check_name(name):
        folder = directory / campaign_name
        if read_journal(folder):
            controller = Campaign.open(folder)
        else:
            config = load_campaign(campaign_file(campaign_name), overrides, profile=profile)
            controller = Campaign.create(config, folder)
        try:
            if controller.finished():
                log.info("%s is finished: skipped", folder)
                if not (folder / REPORT_FOLDER / "summary.md").exists():
                    write_report(folder)
            else:
                from hpc.analysis.report import write_report_logged

                controller.run(on_progress=on_progress, report=write_report_logged)
        finally:
            controller.close()
    return compare_case_study(name, directory, cs1_dir=cs1_dir, powers_W=powers_W)


# ---- the comparison ------------------------------------------------------------------------


@dataclass
class Optimum:
    """The best design of one campaign, as the comparison uses it."""

    campaign: str
    objective_kind: str
    operating_point: str
    c_rate: float | None
    params: dict[str, float]
    objective: float
    design: dict[str, float] | None          # kernels.cell.model.ElectrodeDesign fields
    cell_options: dict[str, Any]             # parameter set and packaging of the campaign


def load_optimum(folder: Path) -> Optimum | None:
    """The best completed trial of a campaign folder, or None when it has none."""
    from hpc.analysis.report import load_campaign_data

    data = load_campaign_data(folder)
    best = data.best()
    if best is None:
        return None
    from hpc.campaign.config import load_frozen_campaign
    from jobs.contract.spec import EvaluationSpec
    from jobs.simulate import cell_options

    spec = EvaluationSpec.from_dict(load_frozen_campaign(folder / FROZEN_CONFIG).to_spec_dict())
    design = best.result.cell.design if best.result and best.result.cell else None
    return Optimum(
        campaign=data.name, objective_kind=str(data.objective.get("kind")),
        operating_point=data.operating_point, c_rate=data.objective.get("c_rate"),
        params=dict(best.params),
        objective=float(best.objective), design=design,
        # the campaign's own cell model (parameter set, packaging, model options,
        # calibration), always as a full 4680 cell: cs1's half-cell design too
        cell_options={**cell_options(spec), "half_cell": False},
    )


def ragone_curve(optimum: Optimum, powers_W: tuple[float, ...] | list[float]
                 ) -> list[dict[str, Any]]:
    """Constant-power discharges of an optimum built as a 4680 full cell (cs1's half-cell
    design too: same cathode, anode at the packaging's N/P ratio)."""
    from jobs.simulate import discharge

    if optimum.design is None:
        raise ValueError(f"{optimum.campaign}: its best trial has no cell design to sweep")
    return [discharge(optimum.cell_options, optimum.design, "power", float(p)) for p in powers_W]


def refine_crossing_W(low_power_optimum: Optimum, high_power_optimum: Optimum, low_W: float,
                      high_W: float, quantity: str = "energy_density_Wh_L",
                      rel_tol: float = 0.02, max_iter: int = 12) -> float:
    """The power in [low_W, high_W] where the high-power optimum overtakes the low-power one,
    by bisection in log power to `rel_tol` (each step: one discharge of each design)."""
    def advantage(power_W: float) -> float:
        a, b = (_energies(ragone_curve(o, [power_W]), quantity)[0]
                for o in (low_power_optimum, high_power_optimum))
        return a - b

    low, high = float(low_W), float(high_W)
    for _ in range(max_iter):
        if high / low <= 1.0 + rel_tol:
            break
        middle = math.sqrt(low * high)
        if advantage(middle) > 0:
            low = middle
        else:
            high = middle
    return math.sqrt(low * high)


def _energies(curve: list[dict[str, Any]], quantity: str) -> np.ndarray:
    return np.array([float(r.get(quantity) or 0.0) if r.get("feasible") else 0.0 for r in curve])


def _resolve_cs1(cs1_dir: str | Path | None, directory: Path) -> Path | None:
    """A cs1 campaign folder: the one given, the cs1 reference inside a cs1 case-study folder
    given, or a sibling ``../cs1`` case-study folder; None when there is none."""
    candidates = [Path(cs1_dir)] if cs1_dir is not None else [directory.parent / "cs1"]
    for path in candidates:
        if (path / FROZEN_CONFIG).exists():
            return path
        if (path / CS1_REFERENCE / FROZEN_CONFIG).exists():
            return path / CS1_REFERENCE
    if cs1_dir is not None:
        raise FileNotFoundError(f"--cs1 {cs1_dir}: neither a campaign folder nor a cs1 "
                                f"case-study folder (no campaign.toml, no {CS1_REFERENCE}/)")
    return None


def compare_case_study(name: str, directory: str | Path, cs1_dir: str | Path | None = None,
                       powers_W: tuple[float, ...] = COMPARISON_POWERS_W) -> dict[str, Any]:
    """Write ``<directory>/report/`` (summary.md, summary.json, plots) comparing the campaigns'
    optima; returns the summary dict."""
    from hpc.analysis.report import (
        find_crossing_W,
        markdown_table,
        plot_ragone,
        ragone_per_mass_and_volume,
    )

    directory = Path(directory)
    out = directory / REPORT_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    optima: dict[str, Optimum] = {}
    for campaign_name in _check_name(name):
        folder = directory / campaign_name
        optimum = load_optimum(folder) if (folder / FROZEN_CONFIG).exists() else None
        if optimum is None:
            notes.append(f"{campaign_name}: not enough data (no completed trial in {folder.name}).")
        else:
            optima[campaign_name] = optimum
    summary: dict[str, Any] = {"schema_version": CASE_STUDY_SCHEMA_VERSION,
                               "case_study": name, "optima": {
        k: {"objective_kind": o.objective_kind, "operating_point": o.operating_point,
            "objective": o.objective, "params": o.params, "design": o.design}
        for k, o in optima.items()}, "notes": notes, "plots": []}
    plots: list[tuple[str, str]] = []

    if name == "cs1" and optima:
        plots.append(("Optimum per C-rate", _plot_cs1(optima, out / "cs1_optima.png").name))

    curves_spec: list[tuple[str, Optimum]] = []
    quantity = "energy_density_Wh_L"   # the crossing and the table's quantity
    if name == "cs2":
        quantity = "specific_energy_Wh_kg"
        curves_spec = [(f"{o.campaign}: optimum at {o.operating_point}", o)
                       for o in optima.values()]
    elif name == "cs3":
        labels = {"cs3": "energy cell (optimum at 10 W)", "cs3_power": "power cell (optimum at "
                  "200 W)"}
        curves_spec = [(labels.get(k, k), o) for k, o in optima.items()]
        cs1_folder = _resolve_cs1(cs1_dir, directory)
        cs1_optimum = load_optimum(cs1_folder) if cs1_folder is not None else None
        if cs1_optimum is None:
            notes.append("No cs1 optimum to compare with: run `microloop case-study cs1` first "
                         "and pass its folder with --cs1 (or put it next to this one as ../cs1).")
        else:
            curves_spec.append(("cs1 optimum (1C half cell) built as a 4680", cs1_optimum))
            summary["cs1_source"] = str(cs1_folder)

    if curves_spec:
        curves: dict[str, dict[str, Any]] = {}
        for label, optimum in curves_spec:
            try:
                curve = ragone_curve(optimum, powers_W)
            except ValueError as error:
                notes.append(f"{label}: no Ragone curve ({error}).")
                continue
            try:
                literature = ragone_per_mass_and_volume(np.array(powers_W), curve)
            except ValueError as error:
                notes.append(f"{label}: no Ragone curve ({error}).")
                continue
            curves[label] = {"campaign": optimum.campaign, "powers_W": list(powers_W),
                             quantity: _energies(curve, quantity).tolist(),
                             **{key: literature[key].tolist() for key in RAGONE_KEYS},
                             "reasons": [r.get("reason", "") for r in curve]}
        crossing = None
        keys = list(curves)
        members = CASE_STUDIES[name]
        if len(keys) >= 2 and [curves[k]["campaign"] for k in keys[:2]] == list(members[:2]):
            # the low-power optimum against the high-power one (cs2 and cs3)
            crossing = find_crossing_W(np.array(powers_W), np.array(curves[keys[0]][quantity]),
                                       np.array(curves[keys[1]][quantity]))
            summary["crossing_power_grid_W"] = crossing
            if crossing is not None:
                # the sweep only brackets it: bisect between the two swept powers around it
                k = int(np.searchsorted(np.array(powers_W), crossing))
                bracket = (powers_W[max(k - 1, 0)], powers_W[min(k, len(powers_W) - 1)])
                crossing = refine_crossing_W(optima[members[0]], optima[members[1]], *bracket,
                                             quantity=quantity)
            summary["crossing_power_W"] = crossing
            if crossing is None:
                notes.append(f"The low-power optimum stays above the high-power one from "
                             f"{powers_W[0]:g} to {powers_W[-1]:g} W: no crossing in the sweep.")
            cs1_key = next((k for k in keys if k.startswith("cs1")), None)
            if cs1_key is not None and GAIN_POWER_W in powers_W:
                i = list(powers_W).index(GAIN_POWER_W)
                energy_cell = curves[keys[0]][quantity][i]
                cs1_cell = curves[cs1_key][quantity][i]
                summary["energy_cell_Wh_L_at_10W"] = energy_cell
                summary["cs1_design_Wh_L_at_10W"] = cs1_cell
                summary["gain_over_cs1_at_10W_percent"] = (
                    100.0 * (energy_cell - cs1_cell) / cs1_cell if cs1_cell > 0 else None)
        summary["ragone"] = curves
        if curves:
            plots.append(("Ragone curves of the optima", plot_ragone(
                {k: {"power_W": np.array(v["powers_W"]),
                     **{key: np.array(v[key]) for key in RAGONE_KEYS}}
                 for k, v in curves.items()},
                out / f"{name}_ragone.png", f"{name}: Ragone curves of the optima (4680 cell)",
                crossing_W=summary.get("crossing_power_W")).name))

    summary["plots"] = [p for _, p in plots]
    from jobs.store import json_safe

    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=1))
    (out / "summary.md").write_text(_markdown(name, optima, summary, plots, notes,
                                              markdown_table))
    return summary


def _plot_cs1(optima: dict[str, Optimum], path: Path) -> Path:
    from hpc.analysis.report import _pyplot, plain_log_axis

    plt = _pyplot()
    rates, caps, wt, por = [], [], [], []
    for optimum in optima.values():
        rates.append(float(optimum.c_rate or math.nan))
        caps.append(optimum.objective)
        wt.append(optimum.params.get("am_wt_frac", math.nan))
        por.append(optimum.params.get("porosity", math.nan))
    order = np.argsort(rates)
    rates_a = np.array(rates)[order]
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6))
    axes[0].plot(rates_a, np.array(caps)[order], "o-")
    plain_log_axis(axes[0].xaxis, axes[0].set_xscale, tuple(sorted(set(rates_a.tolist()))))
    axes[0].set_xlabel("C-rate (1/h)")
    axes[0].set_ylabel("best capacity (mAh/g AM)")
    axes[1].plot(rates_a, np.array(wt)[order], "o-", label="AM weight fraction")
    axes[1].plot(rates_a, np.array(por)[order], "s-", label="porosity")
    plain_log_axis(axes[1].xaxis, axes[1].set_xscale, tuple(sorted(set(rates_a.tolist()))))
    axes[1].set_xlabel("C-rate (1/h)")
    axes[1].set_ylabel("optimal value (-)")
    axes[1].legend(fontsize=8)
    loadings = {o.params.get("mass_loading_mg_cm2") for o in optima.values()}
    loading = f" ({loadings.pop():g} mg/cm2)" if len(loadings) == 1 and None not in loadings else ""
    fig.suptitle(f"cs1: half-cell optimum per C-rate{loading}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _markdown(name: str, optima: dict[str, Optimum], summary: dict[str, Any],
              plots: list[tuple[str, str]], notes: list[str], markdown_table: Callable) -> str:
    lines = [f"# Case study {name}", ""]
    rows = [{"campaign": k, "operating point": o.operating_point, "objective": o.objective_kind,
             "best": o.objective, **o.params,
             "thickness_um": (o.design or {}).get("thickness_um")} for k, o in optima.items()]
    params = [p for p in ("am_wt_frac", "porosity", "binder_adhesion", "mass_loading_mg_cm2")
              if any(p in r for r in rows)]
    if rows:
        lines += ["## Optimal designs", "", markdown_table(
            rows, ["campaign", "operating point", "objective", "best", *params, "thickness_um"]),
            ""]
    else:
        lines += ["Not enough data: no campaign has a completed trial.", ""]
    if "crossing_power_W" in summary:
        crossing = summary["crossing_power_W"]
        lines.append("- Power where the high-power optimum overtakes the low-power one "
                     "(energy cell / power cell crossing): "
                     + (f"{crossing:.0f} W" if crossing is not None else "none in the sweep"))
    if summary.get("gain_over_cs1_at_10W_percent") is not None:
        lines.append(f"- Energy cell vs cs1 design at 10 W: {summary['energy_cell_Wh_L_at_10W']:.0f}"
                     f" vs {summary['cs1_design_Wh_L_at_10W']:.0f} Wh/L "
                     f"({summary['gain_over_cs1_at_10W_percent']:+.1f} %)")
    if summary.get("ragone"):
        powers = next(iter(summary["ragone"].values()))["powers_W"]
        quantity = "specific_energy_Wh_kg" if name == "cs2" else "energy_density_Wh_L"
        table = [{"power_W": p, **{k: v[quantity][i] for k, v in summary["ragone"].items()}}
                 for i, p in enumerate(powers)]
        lines += ["", f"## Ragone curves ({quantity}; 0 = cannot deliver that power)", "",
                  markdown_table(table, ["power_W", *summary["ragone"]]), ""]
    lines += [""] + [f"![{title}]({file})\n" for title, file in plots]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
