"""The campaign report: PNG plots and a markdown summary in ``<campaign>/report/``.

Written by the controller at the end of every run (through `write_report_logged`, which the CLI hands it) and by
`microloop report DIR`. It reads only the campaign folder (the frozen ``campaign.toml``, the
journal, ``voxels.zarr``), so it works on a finished, running or crashed campaign alike, and it
never fails for lack of data: a plot that needs more completed trials than there are is replaced
by a line saying so in the summary.

What is in it, and why:
- ``trace.png``: best objective so far against evaluations, the initial design shaded, so one
  sees whether the optimiser still improved after its space-filling start.
- ``objective_over_params.png``: partial dependence of a GP fitted to the trials (the mean over
  the other parameters, +- 2 sd), with the observations, so one sees which way each knob pulls.
- ``importance.png``: 1 / GP length-scale per parameter (unit-cube inputs): a short length-scale
  means the objective changes quickly along that parameter.
- ``microstructure.png``: three orthogonal mid-slices of the best design's first stored sample.
- ``ragone.png``: the best design's energy against power (when the campaign swept powers).
- ``summary.md`` (the table of the best designs) and ``summary.json`` (the same, for scripts).
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc.campaign.folder import REPORT_FOLDER
from jobs.contract.result import EvaluationResult
from jobs.store import write_text_atomic

#: a GP over d parameters needs a few points; below this the GP plots are skipped
MIN_TRIALS_FOR_GP = 3
N_BEST_ROWS = 5
PHASE_NAMES = ("pore", "AM", "CBD")
PHASE_COLOURS = ("#f2f2f2", "#1f4e9c", "#e07b00")

OBJECTIVE_LABELS = {
    "energy_density_Wh_L": ("energy density", "Wh/L"),
    "specific_energy_Wh_kg": ("specific energy", "Wh/kg"),
    "capacity_mAh_g": ("capacity per gram of AM", "mAh/g"),
}
PARAM_LABELS = {
    "am_wt_frac": "AM weight fraction (-)",
    "porosity": "porosity (-)",
    "binder_adhesion": "binder adhesion (-)",
    "mass_loading_mg_cm2": "mass loading (mg/cm2)",
}


@dataclass
class TrialRecord:
    """One evaluation as the report sees it."""

    trial_id: int
    status: str
    params: dict[str, float]
    objective: float | None
    feasible: bool | None
    reason: str
    result: EvaluationResult | None
    #: multi-fidelity campaigns: the [fidelity] level it ran at
    fidelity_level: int | None = None


@dataclass
class CampaignData:
    """What a report needs from a campaign folder."""

    directory: Path
    name: str
    description: str
    objective: dict[str, Any]
    bounds: dict[str, tuple[float, float]]
    fixed: dict[str, float]
    n_initial: int
    budget: int
    trials: list[TrialRecord] = field(default_factory=list)
    #: multi-fidelity campaigns: the index of the top [fidelity] level (None otherwise)
    top_fidelity_level: int | None = None
    #: the campaign's cell-model line: parameter set, and the calibration when one was named
    cell_model: str = "Chen2020 (uncalibrated)"
    #: the calibration's parameters, one row each (calibration_rows); empty when uncalibrated
    calibration: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> list[TrialRecord]:
        """Completed feasible trials: the ones with an objective value."""
        return [t for t in self.trials if t.status == "complete" and t.objective is not None
                and math.isfinite(t.objective)]

    @property
    def infeasible(self) -> list[TrialRecord]:
        """Completed trials whose design is infeasible (no value, a physical reason)."""
        return [t for t in self.trials if t.status == "complete" and t.feasible is False]

    @property
    def failed(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == "failed"]

    def best(self) -> TrialRecord | None:
        """The best feasible trial; in a multi-fidelity campaign, at the top level only (a
        cheap level's value is not the objective)."""
        done = self.complete
        if self.top_fidelity_level is not None:
            done = [t for t in done if t.fidelity_level == self.top_fidelity_level]
        return max(done, key=lambda t: (t.objective, -t.trial_id)) if done else None

    @property
    def objective_label(self) -> str:
        what, unit = OBJECTIVE_LABELS.get(self.objective.get("kind", ""), ("objective", "-"))
        return f"{what} ({unit})"

    @property
    def operating_point(self) -> str:
        if self.objective.get("power_W") is not None:
            return f"{self.objective['power_W']:g} W"
        cell = "half cell" if self.objective.get("half_cell") else "full cell"
        return f"{self.objective.get('c_rate', float('nan')):g}C ({cell})"


def load_campaign_data(directory: str | Path) -> CampaignData:
    """Read a campaign folder; FileNotFoundError when it is not one."""
    from hpc.campaign.folder import FROZEN_CONFIG
    from hpc.campaign.journal import read_journal
    from hpc.campaign.trials import fold_events

    directory = Path(directory)
    frozen = directory / FROZEN_CONFIG
    if not frozen.exists():
        raise FileNotFoundError(f"{directory} is not a campaign folder (no {FROZEN_CONFIG})")
    config = tomllib.loads(frozen.read_text())
    space = config.get("space", {})
    bounds = {k: (float(v[0]), float(v[1])) for k, v in space.items()
              if isinstance(v, list) and k != "log_scale"}
    fixed = {k: float(v) for k, v in space.items() if isinstance(v, int | float)}
    optimizer = config.get("optimizer", {})
    trials = fold_events(read_journal(directory))
    records = [
        TrialRecord(trial_id=t.trial_id, status=t.status, params=dict(t.params),
                    objective=None if t.objective is None else float(t.objective),
                    feasible=t.feasible, reason=t.reason, result=t.result,
                    fidelity_level=t.fidelity_level)
        for t in sorted(trials.values(), key=lambda t: t.trial_id)
    ]
    return CampaignData(
        directory=directory, name=str(config.get("name", directory.name)),
        description=str(config.get("description", "")), objective=dict(config.get("objective", {})),
        bounds=bounds, fixed=fixed, n_initial=int(optimizer.get("n_initial", 0)),
        budget=int(optimizer.get("budget", 0)), trials=records,
        top_fidelity_level=(len(config["fidelity"]["levels"]) - 1
                            if config.get("fidelity", {}).get("levels") else None),
        cell_model=describe_cell_model(config.get("cell", {})),
        calibration=calibration_rows(config.get("cell", {})),
    )


def describe_cell_model(cell: dict[str, Any]) -> str:
    """One line saying which cell model scored the campaign, and whether (and how) it was
    calibrated to measurements: the fitted values with standard errors and the RMSE."""
    name = str(cell.get("parameter_set", "Chen2020"))
    path = cell.get("calibration")
    if not path:
        return f"{name} (uncalibrated)"
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        return f"{name}, calibrated with {path} (unreadable now: {error})"
    stderr = data.get("stderr", {})
    values = ", ".join(
        f"{k} = {v:.4g}" + (f" ± {stderr[k]:.2g}" if k in stderr else "")
        for k, v in data.get("values", {}).items())
    meta = data.get("metadata", {})
    rmse = ""
    if "rmse_initial_V" in meta and "rmse_fitted_V" in meta:
        rmse = (f"; RMSE {1e3 * meta['rmse_initial_V']:.1f} -> {1e3 * meta['rmse_fitted_V']:.1f} mV "
                "on the measured curves")
    fitted_on = (meta.get("cell") or {}).get("parameter_set")
    if fitted_on and fitted_on != name:   # a correction carried from another cell: say so
        rmse += f" (fitted on the {fitted_on} parameter set, applied to {name})"
    for check in meta.get("validation", []):
        if check.get("role") == "predict":
            rmse += (f"; predicted {check['curve']}: RMSE {1e3 * check['rmse_uncalibrated_V']:.1f}"
                     f" -> {1e3 * check['rmse_calibrated_V']:.1f} mV")
    return f"{name}, **calibrated** with {path}: {values}{rmse}"


def calibration_rows(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """Which parameters the campaign's calibration moved and by how much: per fitted
    parameter its value, standard error and change relative to the parameter set (a scale of
    1 and no added resistance are the set itself). Empty when uncalibrated or unreadable (the
    cell-model line then says so)."""
    from kernels.cell.corrections import FIT_PARAMETERS

    path = cell.get("calibration")
    if not path:
        return []
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    rows = []
    for name, value in data.get("values", {}).items():
        spec = FIT_PARAMETERS.get(name)
        scale = spec is not None and spec.kind == "scale"
        rows.append({"parameter": name, "pybamm_name": spec.pybamm_name if spec else None,
                     "fitted": float(value), "stderr": data.get("stderr", {}).get(name),
                     "unit": spec.unit if spec else "",
                     # a scale multiplies the set's value; a resistance is added to none
                     "relative_change": float(value) - 1.0 if scale else None})
    return rows


def _calibration_markdown(data: CampaignData) -> list[str]:
    if not data.calibration:
        return []
    lines = ["## Calibration: what moved", "",
             "| parameter | fitted | std. error | change vs the parameter set |", "|---|---|---|---|"]
    for row in data.calibration:
        stderr = "" if row["stderr"] is None else f"{row['stderr']:.2g}"
        change = ("added (the set has none)" if row["relative_change"] is None
                  else f"{100 * row['relative_change']:+.1f} %")
        lines.append(f"| {row['parameter']} | {row['fitted']:.4g} {row['unit']} | {stderr} | "
                     f"{change} |")
    return [*lines, ""]


# ---- numbers ---------------------------------------------------------------------------------


def to_unit(points: list[dict[str, float]], bounds: dict[str, tuple[float, float]]) -> np.ndarray:
    """Parameters scaled to the unit cube of the campaign's bounds (n, d)."""
    names = list(bounds)
    x = np.array([[p[n] for n in names] for p in points], dtype=float).reshape(len(points),
                                                                             len(names))
    low = np.array([bounds[n][0] for n in names])
    high = np.array([bounds[n][1] for n in names])
    return (x - low) / (high - low)


@dataclass
class GPAnalysis:
    """A GP fitted to (unit-cube parameters, objective): length-scales and partial dependence."""

    lengthscales: np.ndarray               # (d,), in unit-cube units
    grid: np.ndarray                       # (n_grid,), unit cube
    mean: np.ndarray                       # (d, n_grid): partial dependence of the GP mean
    sd: np.ndarray                         # (d, n_grid): mean posterior sd over the same points

    @property
    def importance(self) -> np.ndarray:
        """1 / length-scale, normalised to sum 1 (a larger share changes the objective faster)."""
        inverse = 1.0 / self.lengthscales
        return inverse / inverse.sum()


def analyse_gp(x_unit: np.ndarray, y: np.ndarray, n_grid: int = 41, n_base: int = 256,
               seed: int = 0) -> GPAnalysis:
    """Fit the botorch backend's GP (SingleTaskGP, standardised y) and average its posterior
    over `n_base` scrambled Sobol points of the other parameters, per parameter (partial
    dependence). ValueError when y is constant (no GP can be fitted to it)."""
    import torch

    from bayes.botorch_backend import fit_gp

    x_unit = np.asarray(x_unit, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1, 1)
    if x_unit.ndim != 2 or x_unit.shape[0] != y.shape[0]:
        raise ValueError(f"x_unit must be (n, d) with n = len(y); got {x_unit.shape}, {y.shape}")
    if np.ptp(y) == 0.0:
        raise ValueError("the objective is the same for every trial: nothing to fit")
    torch.manual_seed(seed)
    model = fit_gp(x_unit, y, None)
    kernel = model.covar_module
    lengthscale = getattr(kernel, "lengthscale", None)
    if lengthscale is None:
        lengthscale = kernel.base_kernel.lengthscale
    lengthscales = lengthscale.detach().numpy().reshape(-1)
    d = x_unit.shape[1]
    base = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(n_base).double()
    grid = np.linspace(0.0, 1.0, n_grid)
    mean = np.empty((d, n_grid))
    sd = np.empty((d, n_grid))
    with torch.no_grad():
        for i in range(d):
            points = base.repeat(n_grid, 1)
            points[:, i] = torch.as_tensor(grid).repeat_interleave(n_base)
            # one q = 1 posterior per point (a batch): only the marginal variances are used,
            # and a joint posterior of all n_grid * n_base points built their full covariance
            # (10 496^2 doubles, a 1.7 GB peak and 9 CPU-s for a 6-trial report)
            posterior = model.posterior(points.unsqueeze(-2))
            m = posterior.mean.reshape(n_grid, n_base)
            s = posterior.variance.clamp_min(0).sqrt().reshape(n_grid, n_base)
            mean[i] = m.mean(dim=1).numpy()
            sd[i] = s.mean(dim=1).numpy()
    return GPAnalysis(lengthscales, grid, mean, sd)


def find_crossing_W(powers_W: np.ndarray, energy_a: np.ndarray, energy_b: np.ndarray
                    ) -> float | None:
    """The lowest power where curve a (better at low power) falls below curve b, interpolated
    linearly in log power; None when a never falls below b inside the sweep. Points where both
    are 0 (neither delivers) are ignored."""
    powers_W = np.asarray(powers_W, dtype=float)
    diff = np.asarray(energy_a, dtype=float) - np.asarray(energy_b, dtype=float)
    both_dead = (np.asarray(energy_a) <= 0) & (np.asarray(energy_b) <= 0)
    keep = ~both_dead & np.isfinite(diff)
    p, d = powers_W[keep], diff[keep]
    for k in range(1, len(p)):
        if d[k - 1] > 0 >= d[k]:
            if d[k] == 0:
                return float(p[k])
            lo, hi = math.log(p[k - 1]), math.log(p[k])
            t = d[k - 1] / (d[k - 1] - d[k])
            return float(math.exp(lo + t * (hi - lo)))
    return None


# ---- plots -----------------------------------------------------------------------------------


def _atomic_target(path: Path) -> Path:
    """A temporary name next to `path` (same folder, same suffix, so the format is kept)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def save_figure_atomic(fig: Any, path: Path) -> None:
    """savefig to a temporary file, then rename: a killed report leaves the old plot or the new
    one, never a 0-byte PNG (and the rename replaces a planted link instead of following it)."""
    tmp = _atomic_target(path)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def plain_log_axis(axis, set_scale, ticks: tuple[float, ...] | None = None) -> None:
    """A log axis labelled with plain numbers (1-2-5 steps, or the given ticks).

    The report draws text literally (`text.parse_math` off, see `_pyplot`), so matplotlib's
    default log labels would show as raw `$\\mathdefault{10^{0}}$`."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    set_scale("log")
    axis.set_major_locator(FixedLocator(ticks) if ticks else LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _pyplot():
    """pyplot on the file-only Agg back-end, every text drawn literally.

    Why no mathtext: plots draw strings from the campaign folder (the name, parameter names,
    labels); a `$` in one is parsed as TeX and `$\\frac{$` made savefig raise. Text objects
    take the setting when created, so it is set before any plot of the report is made."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    matplotlib.rcParams["text.usetex"] = False
    import matplotlib.pyplot as plt

    return plt


def plot_trace(data: CampaignData, path: Path) -> Path:
    """Objective per evaluation (trial order), best so far, initial design shaded."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    done = [t for t in data.trials if t.status in ("complete", "failed")]
    ids = [t.trial_id for t in data.complete]
    values = [t.objective for t in data.complete]
    if data.n_initial:
        ax.axvspan(-0.5, data.n_initial - 0.5, color="0.9", label="initial design")
    ax.scatter(ids, values, color="C0", zorder=3, label="evaluation")
    floor = min(values) if values else 0.0   # trials without a value are drawn at the floor
    infeasible = [t.trial_id for t in data.infeasible]
    if infeasible:
        ax.scatter(infeasible, [floor] * len(infeasible), color="C1", marker="s", zorder=3,
                   label="infeasible (no value)")
    failed = [t.trial_id for t in data.failed]
    if failed:
        ax.scatter(failed, [floor] * len(failed), color="C3", marker="x", zorder=3,
                   label="failed (no result)")
    if ids:
        order = np.argsort(ids)
        best = np.maximum.accumulate(np.array(values)[order])
        ax.step(np.array(ids)[order], best, where="post", color="k", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.set_xlabel("evaluation (trial id)")
    ax.set_ylabel(data.objective_label)
    ax.set_title(f"{data.name}: {len(done)} of {data.budget} evaluations")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path


def plot_partial_dependence(data: CampaignData, gp: GPAnalysis, path: Path) -> Path:
    """GP partial dependence per varied parameter (+- 2 sd) with the observations."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    names = list(data.bounds)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), sharey=True,
                             squeeze=False)
    scored = data.complete
    x_obs = np.array([[t.params[n] for n in names] for t in scored])
    y_obs = np.array([t.objective for t in scored])
    for i, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
        low, high = data.bounds[name]
        x = low + gp.grid * (high - low)
        # the objectives (Wh/L, Wh/kg, mAh/g) are never negative: the band stops at 0
        ax.fill_between(x, np.maximum(gp.mean[i] - 2 * gp.sd[i], 0.0),
                        gp.mean[i] + 2 * gp.sd[i], color="C0", alpha=0.2, label="GP +- 2 sd")
        ax.plot(x, gp.mean[i], color="C0", label="GP mean (partial dependence)")
        ax.scatter(x_obs[:, i], y_obs, color="k", s=12, zorder=3, label="feasible trials")
        ax.set_xlabel(PARAM_LABELS.get(name, name))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))   # narrow panels: labels apart
    axes[0][0].set_ylabel(data.objective_label)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{data.name}: objective over the parameters (averaged over the others)",
                 fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path


def plot_importance(data: CampaignData, gp: GPAnalysis, path: Path) -> Path:
    """Bar chart of the normalised inverse GP length-scales."""
    plt = _pyplot()
    names = list(data.bounds)
    fig, ax = plt.subplots(figsize=(5.0, 0.6 + 0.5 * len(names)))
    ax.barh([PARAM_LABELS.get(n, n) for n in names], gp.importance, color="C2")
    for k, ls in enumerate(gp.lengthscales):
        ax.text(gp.importance[k], k, f"  l = {ls:.2g}", va="center", fontsize=8)
    ax.set_xlim(0, 1.25 * float(gp.importance.max()))
    ax.set_xlabel("importance: (1 / length-scale), normalised")
    ax.set_title(f"{data.name}: parameter importance", fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path


def plot_microstructure(volume: np.ndarray, voxel_um: float, title: str, path: Path) -> Path:
    """Three orthogonal mid-slices of a labelled volume (0 pore, 1 AM, 2 CBD)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _pyplot()
    cmap = ListedColormap(PHASE_COLOURS)
    mid = [s // 2 for s in volume.shape]
    slices = [(volume[mid[0], :, :], "axis 0 (through-plane) cut"),
              (volume[:, mid[1], :], "axis 1 cut"), (volume[:, :, mid[2]], "axis 2 cut")]
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6))
    for ax, (image, label) in zip(axes, slices, strict=True):
        extent = (0, image.shape[1] * voxel_um, image.shape[0] * voxel_um, 0)
        ax.imshow(image, cmap=cmap, vmin=0, vmax=2, interpolation="nearest", extent=extent)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("um")
    handles = [Patch(color=c, label=n) for c, n in zip(PHASE_COLOURS, PHASE_NAMES, strict=True)]
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path


#: The two literature Ragone planes: (power axis, energy axis, their labels).
RAGONE_PANELS = (
    ("specific_power_W_kg", "specific_energy_Wh_kg", "specific power (W/kg)",
     "specific energy (Wh/kg)"),
    ("power_density_W_L", "energy_density_Wh_L", "power density (W/L)", "energy density (Wh/L)"),
)


def ragone_per_mass_and_volume(powers_W: np.ndarray, curve: list[dict[str, Any]]
                               ) -> dict[str, np.ndarray]:
    """A cell's Ragone sweep in the literature's units: power and energy per kg and per L.

    The cell's mass and volume are energy / specific energy and energy / energy density of a
    feasible discharge (both come from the same cell); a load it cannot deliver has energy 0.
    A sweep without any feasible load has no mass to divide by: ValueError."""
    feasible = [r for r in curve if r.get("feasible") and float(r.get("energy_Wh") or 0) > 0]
    if not feasible:
        raise ValueError("no feasible discharge in the sweep: the cell's mass and volume "
                         "(energy / specific energy) are unknown")
    first = feasible[0]
    mass_kg = float(first["energy_Wh"]) / float(first["specific_energy_Wh_kg"])
    volume_L = float(first["energy_Wh"]) / float(first["energy_density_Wh_L"])
    powers = np.asarray(powers_W, float)

    def energy(name: str) -> np.ndarray:
        return np.array([float(r.get(name) or 0.0) if r.get("feasible") else 0.0 for r in curve])

    return {"power_W": powers, "specific_power_W_kg": powers / mass_kg,
            "power_density_W_L": powers / volume_L,
            "specific_energy_Wh_kg": energy("specific_energy_Wh_kg"),
            "energy_density_Wh_L": energy("energy_density_Wh_L"),
            "cell_mass_kg": np.array(mass_kg), "cell_volume_L": np.array(volume_L)}


def _at_power(curve: dict[str, np.ndarray], key: str, power_W: float) -> float:
    """`curve[key]` interpolated log-log at a per-cell power (for the crossing marker)."""
    ok = curve["energy_density_Wh_L"] > 0
    x, y = np.log(curve["power_W"][ok]), np.log(np.maximum(curve[key][ok], 1e-300))
    return float(np.exp(np.interp(math.log(power_W), x, y)))


def plot_ragone(curves: dict[str, dict[str, np.ndarray]], path: Path, title: str,
                crossing_W: float | None = None) -> Path:
    """Literature Ragone plot: log-log, Wh/kg against W/kg and Wh/L against W/L, one panel
    each (`ragone_per_mass_and_volume` curves). Loads a design cannot deliver (energy 0, no
    place on a log axis) are red crosses on the bottom edge; the crossing of the first two
    curves is a star with its per-cell power, and the legend sits below the panels so it
    never covers the label."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.6))
    for ax, (px, ey, xlabel, ylabel) in zip(axes, RAGONE_PANELS, strict=True):
        for k, (label, curve) in enumerate(curves.items()):
            ok = curve[ey] > 0
            ax.plot(curve[px][ok], curve[ey][ok], "o-", color=f"C{k}", label=label, ms=4)
            if (~ok).any():
                ax.plot(curve[px][~ok], np.full((~ok).sum(), 0.03), "x", color="C3", ms=7,
                        transform=ax.get_xaxis_transform(), clip_on=False,
                        label="cannot deliver" if k == 0 else None)
        for axis, scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
            plain_log_axis(axis, scale)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if crossing_W is not None and len(curves) >= 2:
            first = next(iter(curves.values()))
            x = _at_power(first, px, crossing_W)
            y = _at_power(first, ey, crossing_W)
            ax.plot([x], [y], "*", color="k", ms=13, zorder=5)
            ax.annotate(f"crossing\n{crossing_W:.0f} W per cell", (x, y), xytext=(-12, -28),
                        textcoords="offset points", ha="right", va="top", fontsize=8,
                        bbox={"boxstyle": "round", "fc": "white", "ec": "0.6"},
                        arrowprops={"arrowstyle": "-", "color": "0.4"})
    fig.suptitle(title, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 2), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.035 + 0.04 * math.ceil(len(labels) / 2), 1, 0.95))
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path


# ---- the report ------------------------------------------------------------------------------

#: `<campaign>/report/summary.json` (docs/formats.md)
REPORT_SCHEMA_VERSION = "microloop.report/1"


def best_rows(data: CampaignData, n: int = N_BEST_ROWS) -> list[dict[str, Any]]:
    """The n best completed trials with their parameters and main metrics."""
    ranked = sorted(data.complete, key=lambda t: (-t.objective, t.trial_id))[:n]
    rows = []
    for t in ranked:
        mean = t.result.metrics.mean if t.result else None
        cell = t.result.cell if t.result else None
        rows.append({
            "trial_id": t.trial_id, **t.params, "objective": t.objective,
            "feasible": t.feasible,
            "tortuosity_factor": mean.tortuosity_factor if mean else None,
            "effective_conductivity_S_m": mean.effective_conductivity_S_m if mean else None,
            "percolating_fraction": t.result.metrics.percolating_fraction if t.result else None,
            "thickness_um": cell.thickness_um if cell else None,
        })
        # a half cell reports mAh/g only (its energies are 0 by convention), a full cell energies
        names = (("capacity_mAh_g",) if data.objective.get("half_cell")
                 else ("energy_density_Wh_L", "specific_energy_Wh_kg"))
        rows[-1].update({name: getattr(cell.objective, name) if cell else None
                         for name in names})
    return rows


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub markdown table of `rows` restricted to `columns` (missing -> '-')."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _fidelity(data: CampaignData) -> dict[str, Any]:
    """The campaign's [fidelity] table (cubes, cube size, voxel size, solver) as frozen: the
    numbers of a report depend on it, so the summary records it."""
    config = tomllib.loads((data.directory / "campaign.toml").read_text())
    return dict(config.get("fidelity", {}))


def _generator(data: CampaignData) -> dict[str, Any]:
    """The campaign's [generator] table as frozen (the structures every number rests on), with
    what a file frozen before a setting existed ran with (FROZEN_LEGACY_DEFAULTS)."""
    from hpc.campaign.config import FROZEN_LEGACY_DEFAULTS

    config = tomllib.loads((data.directory / "campaign.toml").read_text())
    return {**FROZEN_LEGACY_DEFAULTS["generator"], **dict(config.get("generator", {}))}


def _voxel_um(data: CampaignData) -> float:
    config = tomllib.loads((data.directory / "campaign.toml").read_text())
    return float(config.get("fidelity", {}).get("voxel_um", 1.0))


def write_report_logged(directory: Path) -> None:
    """The controller's end-of-run hook: write the report; a failed report is logged as a
    warning with its reason and does not fail a finished campaign (its results are all on disk)."""
    import logging

    try:
        write_report(directory)
    except Exception as error:
        logging.getLogger("microloop.report").warning(
            "report failed: %s: %s (rerun `microloop report %s`)", type(error).__name__, error,
            directory)


def _outcome_label(entry: dict[str, Any]) -> str:
    what, unit = OBJECTIVE_LABELS.get(entry.get("kind", ""), ("objective", "-"))
    at = (f"{entry['power_W']:g} W" if entry.get("power_W") is not None
          else f"{entry.get('c_rate', float('nan')):g}C")
    return f"{what} at {at} ({unit})"


def pareto_rows(data: CampaignData) -> tuple[list[str], list[dict[str, Any]]] | None:
    """A multi-objective campaign's evaluated designs: the objective labels and one row per
    feasible design (trial, objective vector, whether it meets the outcome constraints, whether
    it is on the Pareto front of those that do). None for a single-objective campaign."""
    from bayes.multiobjective import non_dominated

    also = list(data.objective.get("also") or [])
    constraints = list(data.objective.get("constraints") or [])
    if not also:
        return None
    labels = [_outcome_label(data.objective), *(_outcome_label(a) for a in also)]
    m = len(labels)
    rows = []
    for t in data.trials:
        if t.status != "complete" or t.result is None:
            continue
        value, feasible, _ = t.result.told()
        if not feasible or not isinstance(value, list) or len(value) != m + len(constraints):
            continue
        meets = all(value[m + k] >= c["min"] if c.get("min") is not None
                    else value[m + k] <= c["max"] for k, c in enumerate(constraints))
        rows.append({"trial_id": t.trial_id, "values": value[:m], "meets_constraints": meets,
                     "on_front": False, **t.params})
    good = [r for r in rows if r["meets_constraints"]]
    if good:
        for row, keep in zip(good, non_dominated(np.array([r["values"] for r in good])),
                             strict=True):
            row["on_front"] = bool(keep)
    return labels, rows


def plot_pareto_front(data: CampaignData, labels: list[str], rows: list[dict[str, Any]],
                      path: Path) -> Path:
    """The first two objectives of every feasible design, the front joined by a staircase."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    meets = [r for r in rows if r["meets_constraints"] and not r["on_front"]]
    misses = [r for r in rows if not r["meets_constraints"]]
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["values"][0])
    if meets:
        ax.scatter([r["values"][0] for r in meets], [r["values"][1] for r in meets],
                   color="0.6", label="evaluated design")
    if misses:
        ax.scatter([r["values"][0] for r in misses], [r["values"][1] for r in misses],
                   color="C1", marker="x", label="violates an outcome constraint")
    if front:
        x = [r["values"][0] for r in front]
        y = [r["values"][1] for r in front]
        # the attained region's edge: between two front designs (x ascending, y descending) the
        # best reachable y is the next design's, so the drop comes first ("pre", not "post")
        ax.step(x, y, where="pre", color="C0", zorder=2)
        ax.scatter(x, y, color="C0", zorder=3, label=f"Pareto front ({len(front)})")
        for r in front:
            ax.annotate(str(r["trial_id"]), (r["values"][0], r["values"][1]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    extra = f" (first 2 of {len(labels)} objectives)" if len(labels) > 2 else ""
    ax.set_title(f"{data.name}: Pareto front{extra}")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path



#: The stages `write_report` reports through its `progress` hook (for the command's ETA).
REPORT_STAGES = ("trace", "GP fit and plots", "microstructure and Ragone", "summary")


def write_report(directory: str | Path, progress: Callable[[str], None] | None = None) -> Path:
    """Write ``<directory>/report/`` (plots, summary.md, summary.json); returns summary.md.

    `progress(stage)` is called after each of `REPORT_STAGES` (the CLI's bar and ETA)."""
    from hpc.campaign.safe_paths import check_campaign_folder

    def done(stage: str) -> None:
        if progress is not None:
            progress(stage)

    check_campaign_folder(directory)  # a report/ (or journal, voxels) linked out is refused
    data = load_campaign_data(directory)
    out = Path(directory) / REPORT_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    plots: list[tuple[str, str]] = []
    best = data.best()

    plots.append(("Optimisation trace", plot_trace(data, out / "trace.png").name))
    done(REPORT_STAGES[0])
    pareto = pareto_rows(data)
    front: list[dict[str, Any]] = []
    if pareto is not None:
        labels, pareto_all = pareto
        front = [r for r in pareto_all if r["on_front"]]
        if pareto_all:
            plots.append(("Pareto front", plot_pareto_front(data, labels, pareto_all,
                                                            out / "pareto_front.png").name))
        else:
            notes.append("No Pareto front yet: no feasible design was evaluated.")

    gp_info: dict[str, Any] | None = None
    # infeasible designs have no value: the GP describes the feasible region only
    scored = data.complete
    infeasible = data.infeasible
    if len(scored) < MIN_TRIALS_FOR_GP:
        notes.append(f"Not enough data for the GP plots (objective over the parameters, "
                     f"importance): {len(scored)} completed feasible trial(s), at least "
                     f"{MIN_TRIALS_FOR_GP} needed.")
    else:
        if infeasible:
            notes.append(f"The GP is fitted to the {len(scored)} feasible trials; the "
                         f"{len(infeasible)} infeasible ones (no value) are left out.")
        try:
            gp = analyse_gp(to_unit([t.params for t in scored], data.bounds),
                            np.array([t.objective for t in scored]))
        except Exception as error:  # a GP that will not fit (e.g. not PSD) costs its plots only
            notes.append(f"No GP plots: {type(error).__name__}: {error}.")
        else:
            plots.append(("Objective over the parameters (GP partial dependence)",
                          plot_partial_dependence(data, gp, out /
                                                  "objective_over_params.png").name))
            plots.append(("Parameter importance (GP length-scales)",
                          plot_importance(data, gp, out / "importance.png").name))
            gp_info = {"lengthscales": dict(zip(data.bounds, gp.lengthscales.tolist(),
                                                strict=True)),
                       "importance": dict(zip(data.bounds, gp.importance.tolist(),
                                              strict=True))}

    done(REPORT_STAGES[1])
    if best is not None:
        try:
            from jobs.store import DesignStore

            volume = DesignStore.open(data.directory, best.trial_id).read_sample(0)
            plots.append(("Microstructure of the best design", plot_microstructure(
                volume, _voxel_um(data), f"{data.name}: best design (trial {best.trial_id}), "
                "sample 0", out / "microstructure.png").name))
        except Exception as error:  # missing, unfinished or damaged voxels cost this plot only
            notes.append(f"No microstructure slices: {type(error).__name__}: {error}.")
        ragone = best.result.cell.ragone if best.result and best.result.cell else []
        if ragone:
            powers = np.array([r.power_W_requested if r.power_W_requested is not None
                               else r.power_W for r in ragone])
            try:    # an infeasible point of the sweep delivers 0: a Ragone curve ends there
                curve = ragone_per_mass_and_volume(powers, [r.to_dict() for r in ragone])
                plots.append(("Ragone curve of the best design", plot_ragone(
                    {f"best design (trial {best.trial_id})": curve}, out / "ragone.png",
                    f"{data.name}: Ragone curve of the best design (4680 cell)").name))
            except ValueError as error:
                notes.append(f"No Ragone curve: {error}.")
        elif not data.objective.get("half_cell"):
            notes.append("No Ragone curve: the campaign swept no powers "
                         "(cell.ragone_powers_W is empty).")
    else:
        notes.append("No completed trial yet: no best design.")

    done(REPORT_STAGES[2])
    stopped = _stop_reason(directory)
    if stopped:
        notes.insert(0, f"The campaign was stopped by its controller: {stopped}")
    for t in data.failed:
        notes.append(f"Trial {t.trial_id} failed: {t.reason}")
    for t in infeasible:
        notes.append(f"Trial {t.trial_id} infeasible: {t.reason}")

    rows = best_rows(data)
    summary = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "name": data.name, "description": data.description, "objective": data.objective,
        "bounds": data.bounds, "fixed": data.fixed, "budget": data.budget,
        "cell_model": data.cell_model, "calibration": data.calibration,
        "fidelity": _fidelity(data), "generator": _generator(data),
        "n_trials": len(data.trials), "n_complete": len(scored) + len(infeasible),
        "n_failed": len(data.failed), "n_infeasible": len(infeasible),
        "best": rows[0] if rows else None, "best_designs": rows, "gp": gp_info,
        "notes": notes, "plots": [name for _, name in plots],
        **({"objectives": pareto[0], "pareto_front": front} if pareto is not None else {}),
    }
    from jobs.store import json_safe

    write_text_atomic(out / "summary.json", json.dumps(json_safe(summary), indent=1))
    text = _summary_markdown(data, rows, plots, notes, gp_info)
    if pareto is not None and front:
        columns = ["trial_id", *pareto[0], *data.bounds]
        table = [{**r, **dict(zip(pareto[0], r["values"], strict=True))} for r in front]
        text += "\n## Pareto front\n\n" + markdown_table(table, columns) + "\n"
    write_text_atomic(out / "summary.md", text)
    done(REPORT_STAGES[3])
    return out / "summary.md"


def _stop_reason(directory: str | Path) -> str | None:
    """Why the controller stopped itself (e.g. repeated refused submissions), when that is the
    last thing it did (a later resume or finish makes the stop history)."""
    from hpc.campaign.journal import read_journal

    last = None
    for event in read_journal(directory):
        if event["event"] in ("campaign_started", "campaign_stopped", "campaign_finished"):
            last = event
    return str(last.get("reason")) if last and last["event"] == "campaign_stopped" else None


def _summary_markdown(data: CampaignData, rows: list[dict[str, Any]],
                      plots: list[tuple[str, str]], notes: list[str],
                      gp_info: dict[str, Any] | None) -> str:
    running = len([t for t in data.trials if t.status in ("proposed", "submitted")])
    fixed = ", ".join(f"{k} = {v:g}" for k, v in data.fixed.items()) or "none"
    varied = ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in data.bounds.items())
    lines = [
        f"# Campaign report: {data.name}", "",
        data.description, "",
        f"- Objective: {data.objective_label} at {data.operating_point}",
        f"- Varied: {varied}",
        f"- Fixed: {fixed}",
        f"- Cell model: {data.cell_model}",
        "- Fidelity: " + (", ".join(f"{k} = {v}" for k, v in _fidelity(data).items())
                          or "the defaults"),
        f"- Evaluations: {len(data.trials)} of {data.budget} (initial design {data.n_initial}); "
        f"{len(data.complete)} complete, {len(data.failed)} failed, {running} running",
        "",
        *_calibration_markdown(data),
    ]
    if rows:
        best = rows[0]
        lines += [f"## Best design: trial {best['trial_id']}, {data.objective_label} = "
                  f"{best['objective']:.4g}", ""]
    else:
        lines += ["## Best design", "", "Not enough data: no completed trial yet.", ""]
    if rows:
        columns = ["trial_id", *data.bounds, "objective", "feasible", "thickness_um",
                   "tortuosity_factor", "effective_conductivity_S_m"]
        lines += ["## Best designs", "", markdown_table(rows, columns), ""]
    if gp_info:
        lines += ["## Parameter importance (GP length-scales on the unit cube)", "",
                  markdown_table([{"parameter": k, "length-scale": gp_info["lengthscales"][k],
                                   "importance": gp_info["importance"][k]}
                                  for k in data.bounds],
                                 ["parameter", "length-scale", "importance"]), ""]
    lines += ["## Plots", ""]
    lines += [f"### {title}\n\n![{title}]({name})\n" for title, name in plots]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)
