"""The paper's story rerun under each alternative modelling choice (issue 16's "no" points).

A verdict of docs/case-studies.md rests on the default cell model. Where it says *no* or
*partly*, the question is which modelling choice decides it. This module takes the optima one
seed's campaigns found (the confirmed designs of ``case-study NAME --seeds``) and rescores them
with one choice of docs/cell-model.md changed at a time: the same microstructures and
thicknesses, another cell model. Per choice it reports what the story's points need:

- each optimum's value at the two operating points (10 W and 200 W);
- whether the reversal holds: the low-power optimum wins at low power and the high-power one at
  high power;
- the power where their Ragone curves cross, and both discharge times there against 1 h;
- cs3: whether the cs1 design built as a 4680 is below both cells at every power of the sweep,
  and the energy cell's gain over it at 10 W.

What this does not do: re-optimise under the alternative (a new campaign, `[cell] model_options`
in the campaign file). So "the reversal holds under X" means the two designs keep their order, not
that X would find the same optima. A choice that changes the microstructure (the CBD as a
nanoporous domain: its volume, its ion and electron paths) or its sampling (0.5 um voxels) has
the optima's recipes generated and characterised again (at the confirmation fidelity with that
change, cached next to the confirmations) before they are rescored; the phases' conductivities are left to the sensitivity table of
docs/cell-model.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.analysis.case_studies import (
    COMPARISON_POWERS_W,
    CS1_REFERENCE,
    GAIN_POWER_W,
    Optimum,
    _check_name,
)
from hpc.campaign.folder import FROZEN_CONFIG

#: the story's two operating points (W per cell): the campaigns' own
LOW_POWER_W, HIGH_POWER_W = 10.0, 200.0


@dataclass(frozen=True)
class ModellingChoice:
    """One alternative of docs/cell-model.md applied to a fixed design: CellModelOptions
    changes, Packaging4680 changes, whether the measured particle radius is dropped (then
    the model's fallback R = 3 phi_AM / a applies), and whether the measured pore tortuosity is
    replaced by Bruggeman's tau = eps^-0.5 (the DFN's textbook default, b = 1.5)."""

    name: str
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    packaging: dict[str, Any] = dataclasses.field(default_factory=dict)
    drop_measured_radius: bool = False
    bruggeman_tortuosity: bool = False
    #: the choice changes the microstructure or its characterisation: the optima are generated
    #: and characterised again (at the confirmation fidelity, the same new cubes' seeds, with
    #: `fidelity`'s changes, e.g. a finer voxel size)
    recharacterise: bool = False
    fidelity: dict[str, Any] = dataclasses.field(default_factory=dict)


def _bruggeman(tortuosity: float, porosity: float) -> float:
    """The Bruggeman exponent b with eps^b = eps / tau (kernels.cell.options' mapping)."""
    from kernels.cell.options import tortuosity_to_bruggeman

    return round(float(tortuosity_to_bruggeman(tortuosity, porosity)), 3)


def modelling_choices() -> tuple[ModellingChoice, ...]:
    """The defaults, then each alternative that acts on a fixed design (the rows of the
    sensitivity table that need no new characterisation), and the cathode's electrolyte
    transport without the measured tortuosity (Bruggeman), which the table does not vary."""
    return (
        ModellingChoice("defaults"),
        ModellingChoice("radius: 3phi/a_total (no particle size)", drop_measured_radius=True),
        ModellingChoice("radius: legacy 3phi/a_eff", {"radius_rule": "legacy_3phi_over_a_eff"}),
        ModellingChoice("blocking 0", {"cbd_blocking": 0.0}),
        ModellingChoice("blocking 1", {"cbd_blocking": 1.0}),
        ModellingChoice("capacity: Chen2020 c_max", {"capacity_basis": "parameter_set"}),
        ModellingChoice("N/P 1.0", packaging={"np_ratio": 1.0}),
        ModellingChoice("N/P 1.2", packaging={"np_ratio": 1.2}),
        ModellingChoice("anode tau 6 at eps 0.25", {"anode_bruggeman": _bruggeman(6.0, 0.25)}),
        ModellingChoice("separator tau 3.5 at eps 0.47",
                        {"separator_bruggeman": _bruggeman(3.5, 0.47)}),
        ModellingChoice("thermal lumped", {"thermal": "lumped"}),
        ModellingChoice("cathode tau: Bruggeman eps^-0.5 (not measured)",
                        bruggeman_tortuosity=True),
        ModellingChoice("CBD as nanoporous domain (re-characterised)",
                        {"cbd_volume": "nanoporous_domain"}, recharacterise=True),
        # the resolution bias of 1 um voxels (docs/convergence.md, resolution): the same
        # recipes on 2 cubes of 96 um at 0.5 um
        ModellingChoice("voxels 0.5 um (2 x 192^3, re-characterised)", recharacterise=True,
                        fidelity={"voxel_um": 0.5, "cube_voxels": 192, "n_cubes": 2}),
    )


def _under(optimum: Optimum, choice: ModellingChoice) -> Optimum:
    """The optimum as the cell model of `choice` sees it (same microstructure and thickness)."""
    options = dict(optimum.cell_options)
    options["model_options"] = {**dict(options.get("model_options") or {}),
                                **choice.model_options}
    options["packaging"] = {**dict(options.get("packaging") or {}), **choice.packaging}
    design = dict(optimum.design or {})
    if choice.drop_measured_radius:
        design["particle_radius_um"] = None
    if choice.bruggeman_tortuosity:
        design["tortuosity_factor"] = float(design["porosity"]) ** -0.5
    return dataclasses.replace(optimum, cell_options=options, design=design)


def _values(optimum: Optimum, powers_W: tuple[float, ...], quantity: str) -> tuple[float, ...]:
    """The quantity per power; a discharge that cannot deliver the power counts 0."""
    from hpc.analysis.case_study_seeds import _curve

    return _curve(optimum, powers_W, quantity)[0]


@dataclass(frozen=True)
class StoryUnderChoice:
    """The story's points for one seed's optima under one modelling choice."""

    choice: str
    powers_W: tuple[float, ...]
    quantity: str
    low_curve: tuple[float, ...]        # the low-power (10 W) optimum, per power
    high_curve: tuple[float, ...]       # the high-power (200 W) optimum, per power
    reference_curve: tuple[float, ...] | None   # cs3: the cs1 design as a 4680
    reversal: bool                      # low wins at LOW_POWER_W and high wins at HIGH_POWER_W
    crossing_W: float | None
    discharge_time_low_h: float | None  # at the crossing
    discharge_time_high_h: float | None
    reference_below_both: bool | None   # cs3: below both cells at every power of the sweep
    gain_over_reference_percent: float | None

    def at(self, curve: tuple[float, ...], power_W: float) -> float:
        return curve[self.powers_W.index(power_W)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def story_under_choice(low: Optimum, high: Optimum, reference: Optimum | None,
                       choice: ModellingChoice, quantity: str,
                       powers_W: tuple[float, ...] = COMPARISON_POWERS_W) -> StoryUnderChoice:
    """Rescore the two optima (and the cs1 reference) under `choice` and test the story."""
    from hpc.analysis.case_study_seeds import _crossing, _discharge_time_h

    if LOW_POWER_W not in powers_W or HIGH_POWER_W not in powers_W:
        raise ValueError(f"powers_W must contain {LOW_POWER_W:g} and {HIGH_POWER_W:g} W")
    low_c, high_c = _under(low, choice), _under(high, choice)
    low_curve, high_curve = _values(low_c, powers_W, quantity), _values(high_c, powers_W, quantity)
    i_low, i_high = powers_W.index(LOW_POWER_W), powers_W.index(HIGH_POWER_W)
    reversal = low_curve[i_low] > high_curve[i_low] and high_curve[i_high] > low_curve[i_high]
    crossing = _crossing(low_c, high_c, powers_W, quantity, low_curve, high_curve)
    times = ((_discharge_time_h(low_c, crossing), _discharge_time_h(high_c, crossing))
             if crossing is not None else (None, None))
    reference_curve = below = gain = None
    if reference is not None:
        reference_curve = _values(_under(reference, choice), powers_W, quantity)
        # below both: under the worse cell wherever that one delivers, nothing where it does not
        below = all(r < min(a, b) if min(a, b) > 0 else r == 0
                    for r, a, b in zip(reference_curve, low_curve, high_curve, strict=True))
        ref = reference_curve[powers_W.index(GAIN_POWER_W)]
        gain = 100.0 * (low_curve[powers_W.index(GAIN_POWER_W)] - ref) / ref if ref > 0 else None
    return StoryUnderChoice(
        choice=choice.name, powers_W=tuple(powers_W), quantity=quantity, low_curve=low_curve,
        high_curve=high_curve, reference_curve=reference_curve, reversal=reversal,
        crossing_W=crossing, discharge_time_low_h=times[0], discharge_time_high_h=times[1],
        reference_below_both=below, gain_over_reference_percent=gain)


@dataclass(frozen=True)
class AlternativesAtSeed:
    """A case study's story for one seed under every modelling choice."""

    case_study: str
    seed: int
    low_campaign: str
    high_campaign: str
    designs: dict[str, dict[str, float]]    # campaign -> the optimum's parameters
    confirmed: bool                         # the designs are the confirmed (re-characterised) ones
    rows: tuple[StoryUnderChoice, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "schema": "microloop.case_study_alternatives/1"}


def alternatives_at_seed(name: str, directory: str | Path, seed: int, confirm: Any,
                         cache_root: Path | None,
                         choices: tuple[ModellingChoice, ...] | None = None,
                         powers_W: tuple[float, ...] = COMPARISON_POWERS_W) -> AlternativesAtSeed:
    """The story of case study `name` (cs2 or cs3) for seed `seed` of ``DIR/seed_K/NAME``
    under each choice. `confirm`/`cache_root` as in compare_seeds: with a confirmation cache
    the confirmed designs are used (read back, not evaluated again)."""
    from hpc.analysis.case_study_seeds import _quantity, read_member, seed_folder

    members = _check_name(name)
    if name not in ("cs2", "cs3"):
        raise ValueError(f"alternatives need a Ragone story (cs2 or cs3), not {name!r}")
    study = seed_folder(directory, seed, name)
    optima: dict[str, Optimum] = {}
    confirmed = True
    roles = [*members, *([CS1_REFERENCE] if name == "cs3" else [])]
    for role in roles:
        folder = (seed_folder(directory, seed, "cs1") / CS1_REFERENCE if role == CS1_REFERENCE
                  else study / role)
        if not (folder / FROZEN_CONFIG).exists():
            if role == CS1_REFERENCE:
                continue
            raise FileNotFoundError(f"seed {seed}: {folder} holds no campaign")
        cache = (cache_root / f"seed_{seed}" / ("cs1" if role == CS1_REFERENCE else name) / role
                 if cache_root is not None else None)
        member, optimum = read_member(seed, folder, confirm, cache)
        if optimum is None or optimum.design is None:
            raise ValueError(f"seed {seed}: {role} has no optimum with a cell design yet")
        confirmed = confirmed and member.confirmation is not None
        optima[role] = optimum
    quantity = _quantity(name)
    rows = []
    for choice in (choices or modelling_choices()):
        chosen = optima
        if choice.recharacterise:
            if cache_root is None or not confirm.enabled:
                continue        # nothing to characterise the new volumes at
            chosen = {role: _recharacterised(role, o, choice, seed, name, directory, confirm,
                                             cache_root) for role, o in optima.items()}
        rows.append(story_under_choice(chosen[members[0]], chosen[members[1]],
                                       chosen.get(CS1_REFERENCE), choice, quantity, powers_W))
    return AlternativesAtSeed(
        case_study=name, seed=seed, low_campaign=members[0], high_campaign=members[1],
        designs={role: dict(o.params) for role, o in optima.items()}, confirmed=confirmed,
        rows=tuple(rows))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")[:60]


def _recharacterised(role: str, optimum: Optimum, choice: ModellingChoice, seed: int, name: str,
                     directory: str | Path, confirm: Any, cache_root: Path) -> Optimum:
    """The optimum's recipe generated and characterised again with `choice`'s model options
    (jobs.evaluate at the confirmation fidelity, cached: a finished evaluation is read back)."""
    from hpc.analysis.case_study_seeds import confirmation_spec, seed_folder
    from jobs.evaluate import evaluate

    folder = (seed_folder(directory, seed, "cs1") / CS1_REFERENCE if role == CS1_REFERENCE
              else seed_folder(directory, seed, name) / role)
    spec = confirmation_spec(folder, confirm)
    spec["fidelity"] = {**spec["fidelity"], **choice.fidelity}
    spec["cell"] = {**spec["cell"], "model_options": {
        **dict(spec["cell"].get("model_options") or {}), **choice.model_options}}
    study = "cs1" if role == CS1_REFERENCE else name
    cache = cache_root / f"seed_{seed}" / study / role / f"alt_{_slug(choice.name)}"
    result = evaluate(cache, 0, dict(optimum.params), spec)
    if result.cell is None:
        raise ValueError(f"seed {seed}: {role} under {choice.name!r} gave no cell design "
                         f"({result.objective.infeasible_reason})")
    return dataclasses.replace(optimum, design=dict(result.cell.design))


def _fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:{spec}}{unit}"


def alternatives_markdown(result: AlternativesAtSeed) -> str:
    """One table: per choice the optima at 10 and 200 W, the reversal, the crossing and the
    discharge times there, and (cs3) the cs1 design's place."""
    unit = "Wh/kg" if result.case_study == "cs2" else "Wh/L"
    low, high = result.low_campaign, result.high_campaign
    basis = ("confirmed designs" if result.confirmed
             else "the campaigns' own measurements: not all confirmed")
    head = [f"## {result.case_study}, seed {result.seed}: the story under each modelling choice",
            "",
            f"The optima of seed {result.seed} ({basis}), rescored with one choice "
            "changed at a time (same microstructures and thicknesses; not re-optimised). "
            f"Values in {unit}.", ""]
    columns = ["choice", f"{low} @10 W", f"{high} @10 W", f"{low} @200 W", f"{high} @200 W",
               "reversal", "crossing (W)", "discharge time there (h)"]
    cs3 = result.case_study == "cs3" and any(r.reference_curve is not None for r in result.rows)
    if cs3:
        columns += ["cs1 design below both", "energy cell over cs1 @10 W"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in result.rows:
        cells = [r.choice, _fmt(r.at(r.low_curve, LOW_POWER_W)),
                 _fmt(r.at(r.high_curve, LOW_POWER_W)), _fmt(r.at(r.low_curve, HIGH_POWER_W)),
                 _fmt(r.at(r.high_curve, HIGH_POWER_W)), "yes" if r.reversal else "no",
                 _fmt(r.crossing_W, ".0f"),
                 f"{_fmt(r.discharge_time_low_h, '.2f')} / {_fmt(r.discharge_time_high_h, '.2f')}"]
        if cs3:
            cells += ["-" if r.reference_below_both is None else
                      ("yes" if r.reference_below_both else "no"),
                      _fmt(r.gain_over_reference_percent, "+.1f", " %")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*head, *lines, ""])


def write_alternatives(results: list[AlternativesAtSeed], out: Path) -> Path:
    """alternatives.md and alternatives.json in `out`; returns the markdown path."""
    from jobs.store import json_safe, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "alternatives.json", json.dumps(
        [json_safe(r.to_dict()) for r in results], indent=1))
    path = out / "alternatives.md"
    write_text_atomic(path, "\n".join(alternatives_markdown(r) for r in results))
    return path
