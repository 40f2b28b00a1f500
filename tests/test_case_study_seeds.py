"""The case studies across optimiser seeds, on real small campaigns.

The module fixture runs the commands docs/case-studies.md documents for the `smoke` profile of
cs2 (two seeds, 2 evaluations per campaign at 2 cubes of 24^3, in process, deterministic), then
the cross-seed comparison with a 2 x 24^3 confirmation. The tests check the documented table
row against what the commands give again, and the comparison against what the campaigns
stored and against independent discharges of the confirmed designs.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpc.analysis.case_studies import compare_case_study
from hpc.analysis.case_study_seeds import (
    ConfirmFidelity,
    bound_checks,
    compare_seeds,
    parse_seeds,
    seed_folder,
)
from hpc.cli.app import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "case-studies.md"
SMOKE_HEADING = "### Regression: the smoke profile"
POWERS = {"cs2": 10.0, "cs2_high": 200.0}


def _smoke_section() -> str:
    text = DOC.read_text()
    start = text.index(SMOKE_HEADING)
    end = text.find("\n#", start + len(SMOKE_HEADING))
    return text[start:end if end > 0 else None]


def _documented_commands() -> list[list[str]]:
    block = re.search(r"```bash\n(.*?)```", _smoke_section(), re.S).group(1)
    return [shlex.split(line)[1:] for line in block.splitlines()
            if line.startswith("microloop ")]


def _documented_rows() -> list[dict[str, str]]:
    lines = [line for line in _smoke_section().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, [c.strip() for c in line.strip("|").split("|")], strict=True))
            for line in lines[2:]]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The documented smoke commands, run in a fresh folder (what a reader would type)."""
    root = tmp_path_factory.mktemp("smoke")
    runner = CliRunner()
    outputs = []
    for args in _documented_commands():
        args = [str(root / a) if a.startswith("runs/") else a for a in args]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    return root / "runs" / "smoke", outputs


@pytest.mark.slow
def test_documented_smoke_rows_are_regenerated_by_the_documented_commands(smoke):
    directory, outputs = smoke
    summary = json.loads((directory / "cs2_report" / "summary.json").read_text())
    rows = _documented_rows()
    assert len(rows) == 4
    for row in rows:
        member = next(m for m in summary["members"][row["campaign"]]
                      if m["seed"] == int(row["seed"]))
        assert member["objective"] == pytest.approx(float(row["best (Wh/kg)"]), rel=1e-3)
        assert member["confirmation"]["objective"] == pytest.approx(
            float(row["confirmed at 2 x 24^3 (Wh/kg)"]), rel=1e-3)
        for p in ("am_wt_frac", "porosity"):
            assert member["params"][p] == pytest.approx(float(row[p]), abs=6e-4)
    crossing = summary["crossing_W"]
    documented = re.search(r"crossing: ([\d.]+) W", _smoke_section())
    assert crossing["values"] and crossing["low"] == pytest.approx(float(documented.group(1)),
                                                                   rel=5e-3)
    assert "seeds present 0, 1; missing 2" in outputs[-1]


@pytest.mark.slow
def test_cross_seed_optima_are_the_campaigns_best_and_their_range(smoke):
    directory, _ = smoke
    summary = json.loads((directory / "cs2_report" / "summary.json").read_text())
    assert summary["seeds_present"] == [0, 1] and list(summary["seeds_missing"]) == ["2"]
    # the summary is committed to the docs: it names no folder of the machine that ran it
    text = (directory / "cs2_report" / "summary.json").read_text()
    assert str(directory) not in text and str(directory.parent) not in text
    for campaign in ("cs2", "cs2_high"):
        best = {}
        for seed in (0, 1):
            table = seed_folder(directory, seed, "cs2") / campaign / "trials.csv"
            with table.open() as handle:
                values = [float(r["objective"]) for r in csv.DictReader(handle)
                          if r["status"] == "complete" and r["objective"]]
            best[seed] = max(values)
            # the compact data the docs commit: the campaign's own trials.csv, copied
            copied = directory / "cs2_report" / f"seed_{seed}" / campaign / "trials.csv"
            assert copied.read_text() == table.read_text()
        interval = summary["objective_range"][campaign]
        assert interval["low"] == pytest.approx(min(best.values()))
        assert interval["high"] == pytest.approx(max(best.values()))
        assert sorted(interval["seeds"]) == [0, 1]


@pytest.mark.slow
def test_ragone_bands_return_the_confirmed_objective_and_bracket_every_seed(smoke):
    directory, _ = smoke
    summary = json.loads((directory / "cs2_report" / "summary.json").read_text())
    bands = {b["campaign"]: b for b in summary["ragone"]}
    for campaign, power in POWERS.items():
        band = bands[campaign]
        i = band["powers_W"].index(power)
        for member in summary["members"][campaign]:
            curve = band["per_seed"][str(member["seed"])]
            # the confirmed design swept by the comparison gives back the confirmation's own
            # objective (jobs.evaluate at 2 x 24^3) at the campaign's power
            assert curve[i] == pytest.approx(member["confirmation"]["objective"], rel=1e-3)
            assert all(lo <= v <= hi for lo, v, hi in zip(band["low"], curve, band["high"],
                                                           strict=True))
            # new cubes: the confirmation is not the campaign's own cubes again
            trial = seed_folder(directory, member["seed"], "cs2") / campaign / "trials" / str(
                member["best_trial_id"]) / "result.json"
            own = json.loads(trial.read_text())["objective_spread"]
            assert member["confirmation"]["per_cube"] != own["per_sample"]
            # the noise of the best trial is what its cubes, scored one by one, measured
            assert member["noise"]["best_trial"] == pytest.approx(
                own["rel_std"] / math.sqrt(own["n"]))
            assert member["noise"]["median"] <= member["noise"]["max"]


@pytest.mark.slow
def test_crossing_is_where_the_confirmed_designs_swap_places(smoke):
    """The crossing the documented comparison stored (summary.json, what the docs commit)
    against independent discharges of its confirmed designs either side of it. The stored
    comparison is the one the fixture's `case-study --seeds` computed: running compare_seeds
    again here only repeated its Ragone sweeps."""
    from jobs.simulate import discharge

    directory, _ = smoke
    comparison = json.loads((directory / "cs2_report" / "summary.json").read_text())
    assert comparison["confirm"] == {"n_cubes": 2, "cube_voxels": 24}
    options = {"parameter_set": "Chen2020", "half_cell": False, "packaging": {}}

    def specific_energy(design, power_W):
        record = discharge(options, design, "power", power_W)
        return record["specific_energy_Wh_kg"] if record["feasible"] else 0.0

    crossings = {c["seed"]: c for c in comparison["crossings"]}
    assert sorted(crossings) == [0, 1]
    assert any(c["power_W"] is not None for c in crossings.values())   # not vacuous
    bands = {b["campaign"]: b for b in comparison["ragone"]}
    for seed, crossing in crossings.items():
        if crossing["power_W"] is None:    # then the 10 W optimum is never below the 200 W one
            assert all(a >= b for a, b in zip(bands["cs2"]["per_seed"][str(seed)],
                                              bands["cs2_high"]["per_seed"][str(seed)],
                                              strict=True))
            continue
        power_W = crossing["power_W"]
        assert comparison["crossing_W"]["low"] <= power_W <= comparison["crossing_W"]["high"]
        designs = {c: next(m for m in comparison["members"][c]
                           if m["seed"] == seed)["confirmation"]["design"]
                   for c in ("cs2", "cs2_high")}
        below, above = power_W / 1.05, power_W * 1.05
        assert specific_energy(designs["cs2"], below) > specific_energy(designs["cs2_high"], below)
        assert (specific_energy(designs["cs2"], above)
                <= specific_energy(designs["cs2_high"], above))
        # discharge time at the crossing: the energy each cell delivers there, over the power
        assert set(crossing["discharge_time_h"]) == set(designs)
        for campaign, design in designs.items():
            record = discharge(options, design, "power", power_W)
            assert crossing["discharge_time_h"][campaign] * power_W == pytest.approx(
                record["energy_Wh"], rel=1e-6)


@pytest.mark.slow
def test_one_seed_and_no_seed_are_reported_not_fatal(smoke):
    directory, _ = smoke
    # the campaigns' two powers only: what is checked is the one-seed report, not its Ragone
    one = compare_seeds("cs2", directory, (1,), out=directory / "one",
                        confirm=ConfirmFidelity(0, 24), powers_W=tuple(POWERS.values()))
    assert one.seeds_present == (1,) and one.notes[0].startswith("Only seed 1 is present")
    assert one.objective_range["cs2"].low == one.objective_range["cs2"].high
    assert "Only seed 1" in (directory / "one" / "summary.md").read_text()
    with pytest.raises(FileNotFoundError, match="seeds 5, 6"):
        compare_seeds("cs2", directory, (5, 6), out=directory / "none")
    assert not (directory / "none").exists()


def test_seeds_without_any_run_are_refused_before_anything_is_written(tmp_path):
    """`case-study --seeds` over a folder with no run of those seeds once wrote an empty
    report folder (a summary saying nothing was present); it is an error naming the folder
    and the seeds looked for, and no folder is made."""
    (tmp_path / "seed_0" / "cs3").mkdir(parents=True)   # a seed folder, but no campaign in it
    result = CliRunner().invoke(app, ["case-study", "cs3", "--dir", str(tmp_path),
                                      "--seeds", "0", "--seeds", "2"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "seeds 0, 2" in message and str(tmp_path) in message and "campaign.toml" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed_0"]
    assert not (tmp_path / "cs3_report").exists()


def test_bound_checks_flag_only_optima_within_the_tolerance_of_a_bound():
    bounds = {"am_wt_frac": (0.80, 0.97), "porosity": (0.25, 0.50), "binder_adhesion": (0.0, 1.0)}
    checks = {b.parameter: b.at for b in bound_checks(
        {"am_wt_frac": 0.9699, "porosity": 0.2549, "binder_adhesion": 0.5}, bounds)}
    assert checks == {"am_wt_frac": "high", "porosity": "low", "binder_adhesion": None}
    assert bound_checks({"porosity": 0.26}, bounds)[0].at is None   # 4 % of the range away


def test_seeds_option_is_checked_and_names_itself(tmp_path):
    assert parse_seeds("0,1,2") == (0, 1, 2)
    for bad in ("a,b", "1,1", "-1", ""):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    result = CliRunner().invoke(app, ["case-study", "cs3", "--dir", str(tmp_path),
                                      "--seeds", "0,x"])
    assert result.exit_code == 2 and "--seeds" in result.output
    result = CliRunner().invoke(app, ["case-study", "cs3", "--dir", str(tmp_path),
                                      "--seeds", "0", "--confirm-cubes", "-1"])
    assert result.exit_code == 2 and "--confirm-cubes" in result.output


@pytest.mark.slow
def test_comparison_sweeps_with_the_campaigns_own_cell_model_options(tmp_path):
    """A campaign scored with non-default cell-model options: the comparison's recomputed
    Ragone must use them too (it used the default model before), so the curve at the
    campaign's own power gives back its objective."""
    overrides = {"optimizer": {"budget": 1, "n_initial": 1},
                 "cell": {"model_options": {"preset": "legacy"}}}
    from hpc.analysis.case_studies import campaign_file
    from hpc.campaign.config import load_campaign
    from hpc.campaign.controller import Campaign

    for member in ("cs2", "cs2_high"):
        config = load_campaign(campaign_file(member), overrides, profile="smoke")
        controller = Campaign.create(config, tmp_path / member)
        try:
            controller.run()
        finally:
            controller.close()
    summary = compare_case_study("cs2", tmp_path, powers_W=(10.0, 200.0))
    for member, power in POWERS.items():
        curve = next(v for v in summary["ragone"].values() if v["campaign"] == member)
        assert curve["specific_energy_Wh_kg"][curve["powers_W"].index(power)] == pytest.approx(
            summary["optima"][member]["objective"], rel=1e-3)


@pytest.mark.slow
def test_alternatives_rescore_the_confirmed_optima_and_move_as_the_physics_says(smoke):
    """--alternatives: under the defaults the rescored curves are the comparison's own; an
    anode sized at N/P 1.2 (more graphite in the same can) must lower both designs' Wh/kg at
    10 W, and Chen2020's larger c_max (more charge per gram of cathode) must raise it."""
    from hpc.analysis.case_study_alternatives import alternatives_at_seed, modelling_choices
    from hpc.analysis.case_study_seeds import confirm_cache_root

    directory, _ = smoke
    confirm = ConfirmFidelity(2, 24)
    choices = {c.name: c for c in modelling_choices()}
    picked = tuple(choices[n] for n in ("defaults", "N/P 1.2", "capacity: Chen2020 c_max"))
    result = alternatives_at_seed("cs2", directory, 1, confirm,
                                  confirm_cache_root(directory / "cs2_report", confirm, None),
                                  choices=picked, powers_W=(10.0, 200.0))
    assert result.confirmed
    summary = json.loads((directory / "cs2_report" / "summary.json").read_text())
    bands = {b["campaign"]: b for b in summary["ragone"]}
    defaults, more_anode, chen_cmax = result.rows
    for campaign, curve in (("cs2", defaults.low_curve), ("cs2_high", defaults.high_curve)):
        band = bands[campaign]
        for power, value in zip((10.0, 200.0), curve, strict=True):
            assert value == pytest.approx(band["per_seed"]["1"][band["powers_W"].index(power)],
                                          rel=1e-6)
    for attribute in ("low_curve", "high_curve"):
        base = getattr(defaults, attribute)[0]
        assert getattr(more_anode, attribute)[0] < base < getattr(chen_cmax, attribute)[0]
    # the reversal flag is what the two curves say
    assert defaults.reversal == (defaults.low_curve[0] > defaults.high_curve[0]
                                 and defaults.high_curve[1] > defaults.low_curve[1])


def test_alternatives_option_needs_seeds_and_a_ragone_story(tmp_path):
    result = CliRunner().invoke(app, ["case-study", "cs2", "--dir", str(tmp_path),
                                      "--alternatives"])
    assert result.exit_code == 2 and "--alternatives needs --seeds" in result.output
    result = CliRunner().invoke(app, ["case-study", "cs1", "--dir", str(tmp_path), "--seeds", "0",
                                      "--confirm-cubes", "0", "--alternatives"])
    assert result.exit_code == 2 and "cs2 or cs3" in result.output


def test_seeds_ragone_is_drawn_in_the_literature_units_log_log(tmp_path, monkeypatch):
    """The cross-seed Ragone plot (docs/data/case-studies/*/..._seeds_ragone.png) has W/L on
    x beside Wh/L on y (the 4680 can: pi (23 mm)^2 80 mm = 0.1330 L), so the 1 h isochrone
    is y = x * 1 h whatever the cell, and the crossing is marked at its W/L."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hpc.analysis import report
    from hpc.analysis.case_study_seeds import (
        ConfirmFidelity,
        Interval,
        RagoneBand,
        SeedComparison,
        _plots,
    )

    can_L = math.pi * 0.23 ** 2 * 0.8
    powers = (5.0, 20.0, 50.0, 200.0)
    energy = RagoneBand("energy cell", "cs3", "energy_density_Wh_L", powers,
                        {0: (700.0, 650.0, 150.0, 3.0), 1: (690.0, 640.0, 140.0, 2.0)},
                        can_L, 0.36)
    power = RagoneBand("power cell", "cs3_power", "energy_density_Wh_L", powers,
                       {0: (600.0, 590.0, 560.0, 480.0), 1: (610.0, 600.0, 570.0, 470.0)},
                       can_L, 0.35)
    comparison = SeedComparison(
        "cs3", "paper", (0, 1), (0, 1), {}, ConfirmFidelity(0, 128), {}, {}, {}, {},
        ragone=(energy, power), crossing_W=Interval.of([(0, 30.0), (1, 32.0)]))
    captured = []
    original = report.save_figure_atomic
    monkeypatch.setattr(report, "save_figure_atomic",
                        lambda fig, path: (captured.append(fig), original(fig, path)))
    monkeypatch.setattr(plt, "close", lambda fig=None: None)   # keep the figure to inspect
    [path] = _plots(comparison, tmp_path)
    assert path.name == "cs3_seeds_ragone.png" and path.stat().st_size > 1000
    [fig] = captured
    [ax] = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "W/L" in ax.get_xlabel() and "Wh/L" in ax.get_ylabel()
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["energy cell"].get_xdata(), np.array(powers) / can_L,
                               rtol=2e-3)
    iso = lines["1 h discharge"]
    np.testing.assert_allclose(iso.get_ydata(), iso.get_xdata() * 1.0)
    [span] = [p for p in ax.patches if "crossing" in (p.get_label() or "")]
    x0, x1 = span.get_x(), span.get_x() + span.get_width()
    assert x0 <= 30.0 / can_L and 32.0 / can_L <= x1 and x1 < 2 * 32.0 / can_L
    matplotlib.pyplot.close(fig)


@pytest.mark.slow
def test_a_case_study_logs_each_trial_event_with_an_eta(smoke):
    """`case-study` without a terminal (a batch job): one timestamped line per trial event of
    each member campaign, the last of each with ETA 0:00:00 (a whole study was silent)."""
    _root, outputs = smoke
    pattern = re.compile(r"^\d{4}-\d\d-\d\dT\S+ case study cs2: (\d+)/(\d+) finished "
                         r"\(complete \d+, failed \d+\), running \d+, best \S+; (ETA .*)$")
    lines = [m for m in map(pattern.match, outputs[0].splitlines()) if m]
    assert lines, outputs[0]
    ends = [m for m in lines if m.group(1) == m.group(2)]
    assert len(ends) >= 2 and all(m.group(3).startswith("ETA 0:00:00") for m in ends)
