"""A small, real convergence study: procedural source, TauFactor solves, MPI ranks, SLURM arrays."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hpc.campaign.convergence_config import build_convergence_file
from hpc.cli.commands.convergence import run_study
from jobs.convergence import collect, cube_result_path, load_plan, plan_cubes

DESIGN = {"am_wt_frac": 0.92, "porosity": 0.40, "binder_adhesion": 0.5, "mean_diameter_um": 3.0}


def small_study(**resources):
    return build_convergence_file({
        "material": {"design": DESIGN, "source_voxels": 40, "voxel_um": 0.5},
        "study": {"cube_voxels": [16, 24, 32], "cubes_per_size": 5, "n_bootstrap": 200},
        "resources": resources,
    })


def tortuosities(study_dir):
    _, results, missing = collect(study_dir)
    assert missing == 0
    return {(r["cube_voxels"], r["index"]): r["tortuosity_factor"] for r in results}


def test_local_study_summarises_recommends_plots_and_resumes(tmp_path):
    summary = run_study(tmp_path, small_study(), show_progress=False, poll_s=0.2)
    assert summary["errors"] == [] and summary["missing_cubes"] == 0
    assert [row["cube_voxels"] for row in summary["per_size"]] == [16, 24, 32]
    for row in summary["per_size"]:
        assert row["n_cubes"] == 5 and row["tau_mean"] > 1.0
        low, high = row["tau_ci95"]
        assert low <= row["tau_mean"] <= high
        assert row["cubes_needed"] >= 1 and row["solve_cpu_s"] > 0
    assert summary["per_size"][-1]["bias_vs_largest"] == 0.0
    assert summary["recommended"]["cube_voxels"] in (16, 24, 32)
    assert (tmp_path / "convergence.png").stat().st_size > 1000

    # interrupt: lose two cubes; the rerun solves exactly those and keeps the rest untouched
    plan = load_plan(tmp_path)
    tasks = plan_cubes(tmp_path, plan)
    before = {t.name: cube_result_path(tmp_path, t).stat().st_mtime_ns for t in tasks}
    for lost in tasks[:2]:
        cube_result_path(tmp_path, lost).unlink()
    again = run_study(tmp_path, small_study(), show_progress=False, poll_s=0.2)
    assert again["missing_cubes"] == 0
    after = {t.name: cube_result_path(tmp_path, t).stat().st_mtime_ns for t in tasks}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {t.name for t in tasks[:2]}
    def stats(rows):
        return [(r["cube_voxels"], r["tau_mean"], r["tau_ci95"], r["cubes_needed"]) for r in rows]

    assert stats(again["per_size"]) == stats(summary["per_size"])


def test_a_different_plan_in_the_same_folder_is_refused(tmp_path):
    run_study(tmp_path, small_study(), show_progress=False, poll_s=0.2)
    other = build_convergence_file({"material": {"design": DESIGN, "source_voxels": 40},
                                    "study": {"cube_voxels": [16], "cubes_per_size": 3}})
    with pytest.raises(ValueError, match="different study"):
        run_study(tmp_path, other, show_progress=False)


def test_bad_study_file_names_the_key():
    with pytest.raises(ValueError, match="study.cubes_per_size"):
        build_convergence_file({"material": {"design": DESIGN}, "study": {"cubes_per_size": 1}})
    with pytest.raises(ValueError, match="exactly one of material.design or material.volume"):
        build_convergence_file({"material": {}})


@pytest.mark.mpi
def test_two_mpi_ranks_share_the_cubes_and_agree_with_one_rank(tmp_path):
    serial = run_study(tmp_path / "serial", small_study(n_tasks=2), show_progress=False, poll_s=0.2)
    parallel = run_study(tmp_path / "mpi", small_study(n_tasks=1, mpi_ranks_per_task=2),
                         show_progress=False, poll_s=0.2)
    assert serial["errors"] == [] and parallel["errors"] == []
    assert tortuosities(tmp_path / "serial") == tortuosities(tmp_path / "mpi")


@pytest.mark.slurm
@pytest.mark.slow
def test_study_runs_as_a_slurm_array_with_mpi_ranks_and_the_cli_prints_json(tmp_path):
    spec = tmp_path / "study.toml"
    spec.write_text(
        '[material]\ndesign = { am_wt_frac = 0.92, porosity = 0.40, binder_adhesion = 0.5, '
        'mean_diameter_um = 3.0 }\nsource_voxels = 40\n'
        '[study]\ncube_voxels = [16, 24, 32]\ncubes_per_size = 5\nn_bootstrap = 200\n'
        '[resources]\nexecutor = "slurm"\nn_tasks = 3\nmpi_ranks_per_task = 2\nwalltime_min = 10\n')
    completed = subprocess.run(
        [sys.executable, "-m", "hpc.cli", "convergence", str(spec), "--dir", str(tmp_path / "s"),
         "--json"], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert {"per_size", "recommended"} <= set(summary)
    assert set(summary["per_size"][0]) >= {"cube_voxels", "n_cubes", "mean", "ci95",
                                           "bias_vs_largest", "cubes_needed", "solve_cpu_s"}
    assert set(summary["recommended"]) >= {"cube_voxels", "n_cubes"}
    run_study(tmp_path / "local", small_study(), show_progress=False, poll_s=0.2)
    assert tortuosities(tmp_path / "s") == tortuosities(tmp_path / "local")
    job_logs = list((tmp_path / "s" / "jobs").glob("*_log.out"))
    assert len(job_logs) >= 3  # three array tasks ran


def test_conductivity_can_be_the_studied_metric(tmp_path):
    study = build_convergence_file({
        "material": {"design": DESIGN, "source_voxels": 32, "voxel_um": 0.5},
        "study": {"cube_voxels": [16, 24], "cubes_per_size": 3, "n_bootstrap": 200,
                  "metric": "effective_conductivity_S_m"},
    })
    summary = run_study(tmp_path, study, show_progress=False, poll_s=0.2)
    assert summary["metric"] == "effective_conductivity_S_m"
    assert all(row["metric_mean"] > 0 for row in summary["per_size"])
    _, results, _ = collect(tmp_path)
    assert all(r["tortuosity_factor"] is None and r["effective_conductivity_S_m"] > 0 for r in results)


def test_a_campaign_file_takes_the_recommendation(tmp_path):
    from hpc.campaign.config import ConfigError, parse_campaign

    summary = run_study(tmp_path / "study", small_study(), show_progress=False, poll_s=0.2)
    campaign = {"space": {"am_wt_frac": [0.85, 0.95], "porosity": 0.35},
                "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
                "fidelity": {"from_convergence": "study"}}
    config = parse_campaign(campaign, base_dir=tmp_path)
    assert config.fidelity.cube_voxels == summary["recommended"]["cube_voxels"]
    assert config.fidelity.n_cubes == summary["recommended"]["n_cubes"]
    assert config.fidelity.voxel_um == 0.5
    contradicting = {**campaign, "fidelity": {"from_convergence": "study", "cube_voxels": 999}}
    with pytest.raises(ConfigError, match="fidelity.cube_voxels: 999 contradicts"):
        parse_campaign(contradicting, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="holds no finished convergence study"):
        parse_campaign({**campaign, "fidelity": {"from_convergence": "nowhere"}}, base_dir=tmp_path)


def _overlap(a, b) -> bool:
    """Two cubes of one source share a voxel (boxes intersect on every axis)."""
    return a.source_index == b.source_index and all(
        oa < ob + b.cube_voxels and ob < oa + a.cube_voxels
        for oa, ob in zip(a.origin, b.origin, strict=True))


def test_the_cubes_of_one_size_do_not_overlap_while_they_fit(tmp_path, caplog):
    """The statistics treat a size's cubes as independent samples: cubes that share voxels
    are correlated (the shipped example once cut 30 cubes of 128³ from four 192³ volumes).
    Here 2 volumes of 64³ hold exactly 16 cubes of 32³ and 128 of 16³, all asked for."""
    from jobs.convergence import init_study

    study = build_convergence_file({
        "material": {"design": DESIGN, "source_voxels": 64, "n_source_volumes": 2,
                     "chunk_voxels": 32},
        "study": {"cube_voxels": [16, 32], "cubes_per_size": 16}})
    init_study(tmp_path, study.to_plan())
    with caplog.at_level("WARNING"):
        tasks = plan_cubes(tmp_path, load_plan(tmp_path))
    assert not [r for r in caplog.records if "cubes_per_size" in r.getMessage()]
    for size in (16, 32):
        cubes = [t for t in tasks if t.cube_voxels == size]
        assert len(cubes) == 16 and {t.source_index for t in cubes} == {0, 1}
        assert all(0 <= o <= 64 - size for t in cubes for o in t.origin)
        pairs = [(a.name, b.name) for i, a in enumerate(cubes) for b in cubes[i + 1:]
                 if _overlap(a, b)]
        assert pairs == [], pairs
    assert plan_cubes(tmp_path, load_plan(tmp_path)) == tasks   # deterministic (seeded)


def test_more_cubes_than_fit_without_overlap_are_said_with_the_field_and_the_limit(
        tmp_path, caplog):
    from typer.testing import CliRunner

    from hpc.cli.app import app
    from jobs.convergence import init_study

    study = build_convergence_file({
        "material": {"design": DESIGN, "source_voxels": 64, "n_source_volumes": 2,
                     "chunk_voxels": 32},
        "study": {"cube_voxels": [32], "cubes_per_size": 20}})
    init_study(tmp_path, study.to_plan())
    with caplog.at_level("WARNING"):
        tasks = plan_cubes(tmp_path, load_plan(tmp_path))
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "study.cubes_per_size = 20" in said and "16 non-overlapping 32³" in said
    # the first 16 are still disjoint; only the 4 beyond the limit overlap
    first = tasks[:16]
    assert not any(_overlap(a, b) for i, a in enumerate(first) for b in first[i + 1:])
    # --plan says it before anything runs, on stderr
    result = CliRunner().invoke(app, ["convergence", "--design", "am_wt_frac=0.92",
                                      "--design", "porosity=0.4", "--sizes", "32",
                                      "--cubes-per-size", "20", "--source-voxels", "64",
                                      "--source-volumes", "2", "--plan"])
    assert result.exit_code == 0, result.output
    assert "warning: study.cubes_per_size = 20" in result.stderr
    assert "lower study.cubes_per_size to 16" in " ".join(result.stderr.split())


def test_a_study_frozen_before_disjoint_cubes_keeps_its_random_origins(tmp_path):
    """A study.json without `cube_placement` was planned with random origins: it reads back
    so (its stored cubes stay where they were), and a new plan in its folder names the key."""
    from jobs.convergence import STUDY_FILE, init_study

    study = build_convergence_file({
        "material": {"design": DESIGN, "source_voxels": 64, "chunk_voxels": 32},
        "study": {"cube_voxels": [32], "cubes_per_size": 3}})
    init_study(tmp_path, study.to_plan())
    frozen = json.loads((tmp_path / STUDY_FILE).read_text())
    assert frozen.pop("cube_placement") == "disjoint"
    (tmp_path / STUDY_FILE).write_text(json.dumps(frozen))
    assert load_plan(tmp_path).cube_placement == "random"
    with pytest.raises(ValueError, match="differs in cube_placement"):
        init_study(tmp_path, study.to_plan())
