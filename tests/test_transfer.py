"""Transfer between campaigns: warm start refuses observations made under another fidelity,
generator, power or C-rate (with the reason) unless `[warm_start] allow` names the difference,
and `microloop export` carries observations without voxels to `[warm_start] from_file`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from hpc.campaign.config import load_campaign
from hpc.campaign.controller import Campaign
from hpc.campaign.folder import TABLE_SUMMARY_NAME
from hpc.campaign.journal import read_journal
from hpc.campaign.warm_start import (
    OBSERVATIONS_SCHEMA,
    campaign_context,
    context_difference,
    observations_from_table,
    read_observations_file,
    source_task,
)

MICROLOOP = [sys.executable, "-m", "hpc.cli"]


def _campaign(path: Path, replace: dict | None = None, **sections: dict) -> Path:
    """The cheapest real campaign (2 cubes of 24^3 voxels, Sobol); `sections` update tables,
    `replace` replaces whole ones."""
    data = {
        "name": "source",
        "space": {"am_wt_frac": [0.86, 0.96], "porosity": [0.28, 0.42], "binder_adhesion": 0.5,
                  "mass_loading_mg_cm2": 15.0},
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
        "fidelity": {"n_cubes": 2, "cube_voxels": 24, "voxel_um": 1.0, "rel_tol": 1e-2},
        "optimizer": {"backend": "sobol", "n_initial": 2, "budget": 2, "max_concurrent": 2,
                      "seed": 3},
        "resources": {"executor": "local", "dask_workers": 0, "max_retries": 1,
                      "walltime_min": 10, "poll_interval_s": 0.5},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    data.update(replace or {})
    path.write_text(tomli_w.dumps(data))
    return path


DIFFERENCES = [
    # (allow name, sections that differ from the source, words in the reason)
    ("fidelity", {"fidelity": {"cube_voxels": 32}}, "fidelity differs"),
    ("fidelity", {"fidelity": {"n_cubes": 4}}, "fidelity differs"),
    ("fidelity", {"fidelity": {"voxel_um": 0.5}}, "fidelity differs"),
    ("generator", {"generator": {"mean_diameter_um": 10.0}}, "generator differs"),
    ("power", {"objective": {"power_W": 200.0}}, "power differs: 10.0 there vs 200.0 here"),
    ("c_rate", {"replace": {"objective": {"kind": "energy_density_Wh_L", "c_rate": 2.0}}},
     "C-rate differs: 1.0 there vs 2.0 here"),
]


@pytest.mark.parametrize(("allow", "change", "reason"), DIFFERENCES)
def test_a_difference_is_refused_with_its_reason_unless_allowed_by_name(tmp_path, allow, change,
                                                                        reason):
    base = ({"replace": {"objective": {"kind": "energy_density_Wh_L", "c_rate": 1.0}}}
            if allow == "c_rate" else {})
    source = campaign_context(load_campaign(_campaign(tmp_path / "a.toml", **base)))
    here = campaign_context(load_campaign(_campaign(tmp_path / "b.toml", **change)))
    why = context_difference(source, here)
    assert reason in why and f'allow = ["{allow}"]' in why
    others = [name for name in ("fidelity", "generator", "power", "c_rate") if name != allow]
    assert reason in context_difference(source, here, others)
    assert context_difference(source, here, [allow]) == ""


def test_space_objective_kind_and_cell_are_never_negotiable(tmp_path):
    source = campaign_context(load_campaign(_campaign(tmp_path / "a.toml")))
    everything = ["fidelity", "generator", "power", "c_rate"]
    for name, change, words in (
        ("space", {"space": {"binder_adhesion": [0.2, 0.8]}}, "varies"),
        ("kind", {"objective": {"kind": "specific_energy_Wh_kg"}}, "objective differs"),
        ("cell", {"cell": {"parameter_set": "Ecker2015"}}, "the cell"),
    ):
        here = campaign_context(load_campaign(_campaign(tmp_path / f"{name}.toml", **change)))
        assert words in context_difference(source, here, everything), name


def test_an_observations_file_is_checked_and_names_what_is_wrong(tmp_path):
    bad = tmp_path / "obs.json"
    bad.write_text(json.dumps({"schema_version": "other/9", "context": {}, "observations": []}))
    with pytest.raises(ValueError, match="schema_version 'other/9'"):
        read_observations_file(bad)
    bad.write_text(json.dumps({"schema_version": OBSERVATIONS_SCHEMA, "context": {},
                               "observations": []}))
    with pytest.raises(ValueError, match="context lacks space"):
        read_observations_file(bad)


def test_export_then_import_warm_starts_with_the_same_checks(tmp_path):
    # a real two-trial campaign (12 s here), exported by the command, imported by two more
    source = _campaign(tmp_path / "source.toml")
    controller = Campaign.create(load_campaign(source), tmp_path / "run")
    try:
        progress = controller.run(report=None)
    finally:
        controller.close()
    assert progress.complete == 2
    env = dict(os.environ, PYBAMM_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1")
    out = tmp_path / "obs.json"
    done = subprocess.run([*MICROLOOP, "export", str(tmp_path / "run"), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["schema_version"] == OBSERVATIONS_SCHEMA
    assert data["context"]["fidelity"] == {"n_cubes": 2, "cube_voxels": 24, "voxel_um": 1.0}
    assert data["provenance"]["campaign"] == "source"
    assert len(data["observations"]) == 2
    text = out.read_text()
    assert "vol" not in {k for o in data["observations"] for k in o} and "zarr" not in text
    # same context: both observations told; the values are the source campaign's own
    warm = Campaign.create(load_campaign(_campaign(
        tmp_path / "warm.toml", warm_start={"from_file": str(out)})), tmp_path / "warm")
    warm.close()
    assert warm.optimizer.n_observations == 2
    # another fidelity: refused with the reason, unless allowed
    cold = Campaign.create(load_campaign(_campaign(
        tmp_path / "cold.toml", fidelity={"cube_voxels": 32},
        warm_start={"from_file": str(out)})), tmp_path / "cold")
    cold.close()
    assert cold.optimizer.n_observations == 0
    (event,) = [e for e in read_journal(tmp_path / "cold") if e["event"] == "warm_start"]
    assert "fidelity differs" in event["skipped_reason"]
    allowed = Campaign.create(load_campaign(_campaign(
        tmp_path / "allowed.toml", fidelity={"cube_voxels": 32},
        warm_start={"from_file": str(out), "allow": ["fidelity"]})), tmp_path / "allowed")
    allowed.close()
    assert allowed.optimizer.n_observations == 2
    # the same campaign's trials.csv alone (no journal, no campaign.toml), its context named
    # by the campaign file: the same observations as the journal's, number for number
    table_only = tmp_path / "table_only"
    table_only.mkdir()
    (table_only / "trials.csv").write_bytes((tmp_path / "run" / "trials.csv").read_bytes())
    refused = subprocess.run([*MICROLOOP, "export", str(table_only), "--out", str(out)],
                             capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2 and "--campaign" in refused.stderr
    from_table = observations_from_table(table_only, load_campaign(source))
    assert from_table["context"] == data["context"]
    assert [{k: o[k] for k in ("trial_id", "params", "value", "noise_var", "feasible")}
            for o in from_table["observations"]] == [
        {k: o[k] for k in ("trial_id", "params", "value", "noise_var", "feasible")}
        for o in data["observations"]]


CASE_STUDY_CS3 = Path(__file__).resolve().parents[1] / "docs/data/case-studies/cs3"


def test_the_shipped_cs3_tables_export_and_warm_start_the_200W_campaign(tmp_path):
    """The case-study data keep trials.csv and the report's summary only: exported with the
    campaign file and profile they were run with, they become a source task of the 200 W
    campaign; the wrong profile is refused by the summary kept beside the table."""
    folder = CASE_STUDY_CS3 / "seed_0" / "cs3"
    out = tmp_path / "cs3_10W.json"
    env = dict(os.environ, PYBAMM_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1")
    done = subprocess.run([*MICROLOOP, "export", str(folder), "--out", str(out), "--campaign",
                           "cs3", "--profile", "paper_flatten", "--seed", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    data = read_observations_file(out)
    summary = json.loads((folder / "report_summary.json").read_text())
    values = [o["value"] for o in data["observations"]]
    assert len(values) == summary["n_complete"] == 40
    best = max(data["observations"], key=lambda o: o["value"])
    # the report's best trial, which its own code picked from the journal
    assert best["trial_id"] == summary["best"]["trial_id"]
    assert best["value"] == pytest.approx(summary["best"]["objective"], rel=1e-12)
    assert data["context"]["fidelity"] == {"n_cubes": 2, "cube_voxels": 96, "voxel_um": 1.0}
    assert "asserted" in data["provenance"]["rebuilt_from"]
    assert "calendering" not in data["context"]["generator"]   # "flatten": as older contexts
    power = load_campaign("cs3_power", profile="paper_flatten")
    task, why = source_task(out, power, power.space.to_bayes_space())
    assert why == "" and len(task["observations"]) == 40
    fitted = tmp_path / "cs3_10W_gp.json"
    config = load_campaign("cs3", profile="paper_flatten")
    fitted.write_text(json.dumps(observations_from_table(folder, config, TABLE_SUMMARY_NAME,
                                                         surrogate=True)))
    task, why = source_task(fitted, power, power.space.to_bayes_space())
    assert why == "" and len(task["surrogate"]["train_Y"]) == 40
    with pytest.raises(ValueError, match="fidelity.n_cubes is 2 there but 1"):
        observations_from_table(folder, load_campaign("cs3"), TABLE_SUMMARY_NAME)
    with pytest.raises(ValueError, match="objective.power_W is 10.0 there but 200.0"):
        observations_from_table(folder, power, TABLE_SUMMARY_NAME)
    # a summary that records its generator (reports since 2026-12-03) refuses the wrong one
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    (recorded / "trials.csv").write_bytes((folder / "trials.csv").read_bytes())
    (recorded / TABLE_SUMMARY_NAME).write_text(json.dumps(
        {**summary, "generator": {"kind": "procedural", "calendering": "flatten"}}))
    assert observations_from_table(recorded, config, TABLE_SUMMARY_NAME)["observations"]
    with pytest.raises(ValueError, match="generator.calendering is 'flatten' there but "
                                         "'rearrange'"):
        observations_from_table(recorded, load_campaign("cs3", profile="paper"),
                                TABLE_SUMMARY_NAME)


def test_the_shipped_warm_started_200W_campaigns_reach_the_cold_optimum_sooner():
    """docs/campaigns.md's transfer table, from the shipped tables: on every seed the 200 W
    campaign warm-started from the 10 W one reaches the lowest cold optimum in fewer
    evaluations than the cold campaign of the same seed, and its optimum (confirmed on new
    cubes) lies inside the cold optima's confirmed range."""
    from tests.benchmarks.bench_transfer_cs3 import campaign_trace, evaluations_to

    cold = [campaign_trace(CASE_STUDY_CS3 / f"seed_{s}" / "cs3_power") for s in range(3)]
    warm = [campaign_trace(CASE_STUDY_CS3 / "transfer_warm" / f"seed_{s}") for s in range(3)]
    assert [len(tr) for tr in cold] == [len(tr) for tr in warm] == [40, 40, 40]
    lowest_cold_optimum = min(tr[-1] for tr in cold)
    cold_to = [evaluations_to(tr, lowest_cold_optimum) for tr in cold]
    warm_to = [evaluations_to(tr, lowest_cold_optimum) for tr in warm]
    assert cold_to == [28, 32, 21] and warm_to == [23, 27, 11]   # the documented table
    confirmed = [json.loads((CASE_STUDY_CS3 / "transfer_warm" / f"seed_{s}" /
                             "confirmation.json").read_text()) for s in range(3)]
    for c, trace in zip(confirmed, warm, strict=True):
        assert c["feasible"] and c["campaign_objective"] == pytest.approx(trace[-1], rel=1e-12)
        assert len(c["per_cube"]) == 4
    members = json.loads((CASE_STUDY_CS3 / "summary.json").read_text())["members"]
    cold_confirmed = [m["confirmation"]["objective"] for m in members["cs3_power"]]
    assert len(cold_confirmed) == 3
    for c in confirmed:
        assert min(cold_confirmed) <= c["confirmed"] <= max(cold_confirmed)


def test_warm_start_options_are_validated_with_the_accepted_values(tmp_path):
    from hpc.campaign.config import ConfigError

    one = load_campaign(_campaign(tmp_path / "one.toml", warm_start={"from_file": "obs.json"}))
    assert [Path(p).name for p in one.warm_start.from_file] == ["obs.json"]
    assert Path(one.warm_start.from_file[0]).is_absolute()   # relative to the campaign file
    with pytest.raises(ConfigError, match=r"warm_start\.allow"):
        load_campaign(_campaign(tmp_path / "bad.toml", warm_start={"allow": ["voxels"]}))
