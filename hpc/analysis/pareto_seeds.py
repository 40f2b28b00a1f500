"""Pareto fronts of several multi-objective campaigns side by side: ``microloop fronts A B C``.

One multi-objective campaign's report (`microloop report DIR`) draws its own front; issue 16 asks
what survives another optimiser seed. This module reads the front each report wrote
(``DIR/report/summary.json``, key ``pareto_front``; a summary.json can be named directly, e.g.
the copies under docs/data) and says, per campaign and as the range over them:

- how many designs are on the front, and its two ends (the best design for each objective);
- the hypervolume of the front against one common reference point (default: the origin when
  every objective value is >= 0, as energies and capacities are), so fronts are compared on one
  scale; the exact box decomposition of bayes.multiobjective.hypervolume;
- the range of each design parameter over the front's designs (which parameter the trade-off
  is made of, and which ones every front design shares).

It writes fronts.md, fronts.json and fronts.png (every front as a staircase) into ``--out``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpc.campaign.folder import REPORT_FOLDER

SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class FrontPoint:
    """One design on a front: its trial, its objective vector and its parameters."""

    trial_id: int
    values: tuple[float, ...]
    params: dict[str, float]


@dataclass(frozen=True)
class CampaignFront:
    """The front one campaign's report found (points sorted by the first objective)."""

    source: str
    name: str
    labels: tuple[str, ...]
    points: tuple[FrontPoint, ...]

    @property
    def label(self) -> str:
        """A short name for tables and legends: the source's last two folders."""
        path = Path(self.source)
        if path.name == SUMMARY_NAME:
            path = path.parent.parent if path.parent.name == REPORT_FOLDER else path.parent
        return "/".join(path.parts[-2:]) or self.source

    def end(self, objective: int) -> FrontPoint:
        """The front's design that is best for objective `objective`."""
        return max(self.points, key=lambda p: (p.values[objective], -p.trial_id))

    def parameter_range(self, name: str) -> tuple[float, float]:
        values = [p.params[name] for p in self.points]
        return min(values), max(values)


@dataclass(frozen=True)
class FrontComparison:
    """Several campaigns' fronts on one reference point."""

    labels: tuple[str, ...]
    reference: tuple[float, ...]
    fronts: tuple[CampaignFront, ...]
    hypervolumes: tuple[float, ...]

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(sorted(self.fronts[0].points[0].params))

    def end_range(self, objective: int) -> tuple[float, float]:
        """The best value of objective `objective` over the campaigns' fronts: (min, max)."""
        ends = [f.end(objective).values[objective] for f in self.fronts]
        return min(ends), max(ends)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels), "reference": list(self.reference),
            "campaigns": [
                {"source": f.source, "name": f.name, "n_front": len(f.points),
                 "hypervolume": hv,
                 "ends": [asdict(f.end(k)) for k in range(len(self.labels))],
                 "parameter_ranges": {p: list(f.parameter_range(p)) for p in self.parameters},
                 "front": [asdict(p) for p in f.points]}
                for f, hv in zip(self.fronts, self.hypervolumes, strict=True)],
            "end_ranges": [list(self.end_range(k)) for k in range(len(self.labels))],
            "hypervolume_range": [min(self.hypervolumes), max(self.hypervolumes)],
        }


def summary_path(source: str | Path) -> Path:
    """A campaign folder's report summary, or `source` itself when it is a summary.json."""
    source = Path(source)
    if source.is_file():
        return source
    path = source / REPORT_FOLDER / SUMMARY_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no {REPORT_FOLDER}/{SUMMARY_NAME}; write it with "
                                f"`microloop report {source}` (or name a summary.json)")
    return path


def read_front(source: str | Path) -> CampaignFront:
    """The Pareto front a multi-objective campaign's report found; ValueError for a report
    without one (a single-objective campaign, or no feasible design yet)."""
    path = summary_path(source)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} does not read as a report summary (JSON): {error}") from None
    labels = summary.get("objectives")
    rows = summary.get("pareto_front")
    if not labels or not isinstance(rows, list):
        raise ValueError(f"{path} is the report of a single-objective campaign (no "
                         "'pareto_front'): fronts compares multi-objective campaigns")
    bounds = summary.get("bounds", {})
    points = tuple(sorted(
        (FrontPoint(trial_id=int(r["trial_id"]), values=tuple(float(v) for v in r["values"]),
                    params={k: float(r[k]) for k in bounds if k in r})
         for r in rows if r.get("on_front", True)),
        key=lambda p: (p.values[0], p.trial_id)))
    if not points:
        raise ValueError(f"{path}: the campaign's front is empty (no feasible design that "
                         "meets its outcome constraints yet)")
    return CampaignFront(source=str(source), name=str(summary.get("name", "")),
                         labels=tuple(str(x) for x in labels), points=points)


def default_reference(fronts: Sequence[CampaignFront]) -> tuple[float, ...]:
    """The origin, when every objective value on every front is >= 0; otherwise the caller
    must choose (a reference inside the fronts would drop their ends from the hypervolume)."""
    values = np.array([p.values for f in fronts for p in f.points])
    if np.any(values < 0):
        raise ValueError("the fronts hold negative objective values: give --reference "
                         "(one value per objective, below every front)")
    return tuple(0.0 for _ in range(values.shape[1]))


def compare_fronts(sources: Sequence[str | Path],
                   reference: Sequence[float] | None = None) -> FrontComparison:
    """Read each source's front and measure them against one reference point."""
    from bayes.multiobjective import hypervolume

    if not sources:
        raise ValueError("fronts needs at least one campaign folder or report summary.json")
    fronts = tuple(read_front(s) for s in sources)
    labels = fronts[0].labels
    for f in fronts[1:]:
        if f.labels != labels:
            raise ValueError(f"{f.source} optimises {list(f.labels)}, {fronts[0].source} "
                             f"{list(labels)}: only fronts of the same objectives compare")
    params = set(fronts[0].points[0].params)
    for f in fronts[1:]:
        if set(f.points[0].params) != params:
            raise ValueError(f"{f.source} varies {sorted(f.points[0].params)}, "
                             f"{fronts[0].source} {sorted(params)}: not the same search space")
    ref = tuple(float(r) for r in reference) if reference is not None else default_reference(fronts)
    if len(ref) != len(labels):
        raise ValueError(f"--reference needs one value per objective ({len(labels)}: "
                         f"{', '.join(labels)}); got {len(ref)}")
    hvs = tuple(hypervolume(np.array([p.values for p in f.points]), ref) for f in fronts)
    return FrontComparison(labels=labels, reference=ref, fronts=fronts, hypervolumes=hvs)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def fronts_markdown(c: FrontComparison) -> str:
    """The comparison as a markdown page: one row per campaign, then the ranges."""
    m = len(c.labels)
    lines = [f"# Pareto fronts of {len(c.fronts)} campaign(s)", "",
             "Objectives (maximised): " + "; ".join(c.labels) + ".",
             f"Hypervolume against the reference point ({', '.join(_fmt(r) for r in c.reference)}).",
             "", "| campaign | designs on the front | "
             + " | ".join(f"best {label} (trial)" for label in c.labels)
             + " | hypervolume | " + " | ".join(c.parameters) + " |",
             "|" + "---|" * (3 + m + len(c.parameters))]
    for f, hv in zip(c.fronts, c.hypervolumes, strict=True):
        ends = [f.end(k) for k in range(m)]
        ranges = [f.parameter_range(p) for p in c.parameters]
        lines.append(
            f"| {f.label} | {len(f.points)} | "
            + " | ".join(f"{_fmt(e.values[k])} ({e.trial_id})" for k, e in enumerate(ends))
            + f" | {_fmt(hv)} | "
            + " | ".join(_fmt(lo) if np.isclose(lo, hi) else f"{_fmt(lo)}–{_fmt(hi)}"
                         for lo, hi in ranges) + " |")
    lines += ["", "Over the campaigns:"]
    for k, label in enumerate(c.labels):
        lo, hi = c.end_range(k)
        lines.append(f"- best {label}: {_fmt(lo)}–{_fmt(hi)}")
    lines.append(f"- hypervolume: {_fmt(min(c.hypervolumes))}–{_fmt(max(c.hypervolumes))}")
    lines += ["", "Each end's design (parameters):", ""]
    for f in c.fronts:
        for k, label in enumerate(c.labels):
            e = f.end(k)
            params = ", ".join(f"{p} {_fmt(e.params[p])}" for p in c.parameters)
            lines.append(f"- {f.label}, best {label}: trial {e.trial_id}, "
                         f"({', '.join(_fmt(v) for v in e.values)}), {params}")
    return "\n".join(lines) + "\n"


def plot_fronts(c: FrontComparison, path: Path) -> Path:
    """Every campaign's front (first two objectives) as a staircase, ends marked."""
    from hpc.analysis.report import _pyplot, save_figure_atomic

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, f in enumerate(c.fronts):
        x = [p.values[0] for p in f.points]
        y = [p.values[1] for p in f.points]
        # the edge of the region the front attains: the drop to the next design comes first
        ax.step(x, y, where="pre", color=f"C{i}", alpha=0.8)
        ax.scatter(x, y, color=f"C{i}", s=14,
                   label=f"{f.label} ({len(f.points)} designs)")
    ax.set_xlabel(c.labels[0])
    ax.set_ylabel(c.labels[1])
    ax.set_title("Pareto fronts" + (f" (first 2 of {len(c.labels)} objectives)"
                                    if len(c.labels) > 2 else ""))
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path


def write_fronts(c: FrontComparison, out: str | Path) -> Path:
    """fronts.md, fronts.json and fronts.png into `out`; returns fronts.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fronts.json").write_text(json.dumps(c.to_dict(), indent=1) + "\n")
    plot_fronts(c, out / "fronts.png")
    md = out / "fronts.md"
    md.write_text(fronts_markdown(c))
    return md
