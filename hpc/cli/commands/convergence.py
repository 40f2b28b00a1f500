"""`microloop convergence`: how many sub-volumes of what size a material needs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import typer


def _parse_design(items: list[str]) -> dict[str, float]:
    design: dict[str, float] = {}
    for item in items:
        for part in item.split(","):
            name, sep, value = part.partition("=")
            if not sep:
                raise typer.BadParameter(f"expected NAME=VALUE, got {part!r}", param_hint="--design")
            try:
                design[name.strip()] = float(value)
            except ValueError:
                raise typer.BadParameter(f"{name}: {value!r} is not a number",
                                         param_hint="--design") from None
    return design


def _slurm_executor(study_dir: Path, res, name: str, cpus: int, mem: dict):
    import submitit

    executor = submitit.AutoExecutor(folder=str(study_dir / "jobs"), cluster="slurm")
    extra = {"account": res.account} if res.account else {}
    executor.update_parameters(
        timeout_min=res.walltime_min, cpus_per_task=cpus, name=name,
        **({"slurm_partition": res.partition} if res.partition else {}),
        slurm_additional_parameters=extra, **mem,
    )
    return executor


def _wait(jobs: list, label: str, show_progress: bool, poll_s: float) -> list[str]:
    """Wait for submitit jobs with a bar; the one-line error of each failed one."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), disable=not show_progress, transient=True) as progress:
        bar = progress.add_task(label, total=len(jobs))
        while True:
            done = sum(1 for job in jobs if job.done())
            progress.update(bar, completed=done)
            if done == len(jobs):
                break
            time.sleep(poll_s)
    errors = []
    for job in jobs:
        try:
            job.result()
        except Exception as error:
            text = str(error).strip()
            errors.append(f"job {job.job_id}: {text.splitlines()[-1] if text else error}")
    return errors


def run_study(study_dir: Path, study, show_progress: bool = True, poll_s: float = 2.0) -> dict:
    """Plan, make the source volumes (on SLURM: one array task per procedural volume), solve
    every cube (locally or as a SLURM array), analyse and plot. Resumable."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from jobs.convergence import (
        analyse,
        create_source,
        finish_source,
        generate_source,
        init_study,
        launch_share,
        missing_sources,
        plot,
    )

    study_dir = Path(study_dir)
    plan = study.to_plan()
    res = study.resources
    on_slurm = res.executor == "slurm"
    init_study(study_dir, plan, make_source=not on_slurm or plan.design is None)
    errors: list[str] = []
    jobs: list = []
    if on_slurm:
        if not (study_dir / "source.done.json").exists():
            create_source(study_dir, plan)
            missing = missing_sources(study_dir, plan)
            if missing:   # one volume per array task, its memory estimated (or given)
                sources = _slurm_executor(
                    study_dir, res, "microloop-convergence-source", 1,
                    {"mem_gb": study.source_mem_gb(),
                     "slurm_array_parallelism": len(missing)})
                source_jobs = sources.map_array(generate_source, [str(study_dir)] * len(missing),
                                                missing)
                failed = _wait(source_jobs, "source volumes", show_progress, poll_s)
                if failed:
                    raise RuntimeError("source generation failed: " + "; ".join(failed))
            finish_source(study_dir)
        executor = _slurm_executor(
            study_dir, res, "microloop-convergence", res.mpi_ranks_per_task,
            {"slurm_mem_per_cpu": f"{int(study.rank_mem_gb() * 1024)}M",
             "slurm_array_parallelism": res.n_tasks})
        n = res.n_tasks
        jobs = executor.map_array(launch_share, [str(study_dir)] * n, list(range(n)), [n] * n,
                                  [res.mpi_ranks_per_task] * n)

        def finished() -> bool:
            return all(job.done() for job in jobs)
    else:
        def work() -> None:
            for index in range(res.n_tasks):
                try:
                    launch_share(study_dir, index, res.n_tasks, res.mpi_ranks_per_task)
                except Exception as error:  # recorded, the other tasks still run
                    errors.append(f"task {index}: {type(error).__name__}: {error}")

        worker = threading.Thread(target=work, daemon=True)
        worker.start()

        def finished() -> bool:
            return not worker.is_alive()

    total = len(plan.cube_voxels) * plan.cubes_per_size
    with Progress(TextColumn("[bold]cubes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not show_progress, transient=True) as progress:
        bar = progress.add_task("cubes", total=total)
        while True:
            done_now = finished()
            # count result files rather than reading them: a study may hold thousands of cubes
            progress.update(bar, completed=sum(1 for _ in (study_dir / "cubes").glob("*.json")))
            if done_now:
                break
            time.sleep(poll_s)
    for job in jobs:
        try:
            job.result()
        except Exception as error:
            errors.append(f"job {job.job_id}: {str(error).splitlines()[-1] if str(error) else error}")
    summary = analyse(study_dir)
    summary["errors"] = errors
    if summary["per_size"]:
        plot(study_dir, summary)
    return summary


#: Version of the `convergence --json` object (docs/formats.md); bump on any change of keys.
SCHEMA_VERSION = "microloop.convergence/1"
_STAT_KEYS = ("mean", "sd", "ci95")


def stable_summary(summary: dict) -> dict:
    """The study summary with metric-independent keys: `mean`, `sd`, `ci95` per size whichever
    metric was studied (the study file spells them `tau_*` or `metric_*`), and `schema_version`,
    so a script reads every study the same way."""
    rows = []
    for row in summary["per_size"]:
        stable = {}
        for key, value in row.items():
            prefix, _, stat = key.partition("_")
            stable[stat if prefix in ("tau", "metric") and stat in _STAT_KEYS else key] = value
        missing = [k for k in _STAT_KEYS if k not in stable]
        if missing:
            raise ValueError(f"convergence summary row for {row.get('cube_voxels')} voxels lacks "
                             f"{missing}: expected tau_* or metric_* statistics")
        rows.append(stable)
    return {"schema_version": SCHEMA_VERSION, **summary, "per_size": rows}


def print_plan(plan, as_json: bool) -> None:
    """The study's resource plan (hpc.campaign.convergence_config.StudyResourcePlan)."""
    if as_json:
        typer.echo(json.dumps(plan.to_dict()))
        return
    sizes = ", ".join(f"{s}³" for s in plan.cube_voxels)
    lines = [f"cubes: {plan.n_cubes} ({sizes})",
             f"solve tasks: {plan.n_tasks} ({plan.executor}) x {plan.mpi_ranks_per_task} MPI "
             f"rank(s), at most {plan.cubes_per_task_max} cubes per task",
             f"memory per rank: {plan.rank_mem_gib:g} GiB "
             f"({'estimated for the largest cube' if plan.rank_mem_estimated else 'given'}), "
             f"{plan.task_mem_gib:g} GiB per task"]
    if plan.source_voxels is not None:
        lines.append(f"source: {plan.source_gib_uncompressed:g} GiB of voxels in volumes of "
                     f"{plan.source_voxels}³, {plan.n_source_tasks} generation task(s)"
                     + (f" of {plan.source_mem_gib:g} GiB" if plan.n_source_tasks else
                        " (made here, before the solves)"))
    lines.append(f"chunks: {plan.chunk_voxels}³; the largest cube decodes at most "
                 f"{plan.chunks_per_largest_cube_max} chunks "
                 f"({plan.decoded_voxels_per_largest_cube_max / 1e6:.1f} M voxels)")
    for line in lines:
        typer.echo(line)


def _warn_overlap(study) -> None:
    """A procedural plan asking for more cubes than fit without overlap, said on stderr (a run
    logs the same when it places the cubes, for a user's volume too)."""
    from jobs.convergence import overlap_warning

    if study.material.design is None or study.study.cube_placement != "disjoint":
        return
    edge = study.material.source_voxels
    for size in sorted(study.study.cube_voxels):
        warning = overlap_warning((edge,) * 3, study.material.n_source_volumes, size,
                                  study.study.cubes_per_size)
        if warning:
            typer.echo(f"warning: {warning}", err=True)


def convergence(
    spec: Path = typer.Argument(None, help="Study file (TOML). Flags override its values."),
    design: list[str] = typer.Option([], help="Procedural recipe, name=value; repeat "
                                     "the flag for each, e.g. --design am_wt_frac=0.94 "
                                     "--design porosity=0.35 (a,b in one value is read too)."),
    volume: Path = typer.Option(None, help="A labelled volume (.npy/.tif/.zarr) instead of a design."),
    sizes: list[int] = typer.Option(None, "--sizes", help="Cube edges in voxels; repeat the flag for each."),
    cubes_per_size: int = typer.Option(None, help="Cubes drawn per size."),
    source_voxels: int = typer.Option(None, help="Edge of the generated source volume."),
    source_volumes: int = typer.Option(None, help="Procedural source volumes (one array task "
                                       "each on SLURM)."),
    chunk_voxels: int = typer.Option(None, help="Edge of the source store's chunks."),
    voxel_um: float = typer.Option(None, help="Voxel size in µm."),
    backend: str = typer.Option(None, help="Transport solver: taufactor or native."),
    executor: str = typer.Option(None, help="local or slurm."),
    tasks: int = typer.Option(None, help="SLURM array tasks (or local sequential shares)."),
    mpi_ranks: int = typer.Option(None, help="MPI ranks per task."),
    partition: str = typer.Option(None, help="SLURM partition."),
    study_dir: Path = typer.Option(Path("convergence-study"), "--dir", help="Study folder (resumable)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    show_plan: bool = typer.Option(False, "--plan", help="Print the tasks, memory per rank and "
                                   "chunking the study would request, and run nothing."),
) -> None:
    """Cut many cubes of several sizes, solve them, and recommend the cheapest (size, count)
    that pins the mean metric within the tolerance at the confidence (defaults 1 %, 95 %)."""
    from rich.console import Console
    from rich.table import Table

    from hpc.campaign.convergence_config import build_convergence_file, load_convergence_file

    overrides = {
        "material": {"design": _parse_design(design) or None,
                     "volume": str(volume) if volume else None,
                     "source_voxels": source_voxels, "n_source_volumes": source_volumes,
                     "chunk_voxels": chunk_voxels, "voxel_um": voxel_um},
        "study": {"cube_voxels": sizes or None, "cubes_per_size": cubes_per_size, "backend": backend},
        "resources": {"executor": executor, "n_tasks": tasks, "mpi_ranks_per_task": mpi_ranks,
                      "partition": partition},
    }
    try:
        if spec is not None:
            study = load_convergence_file(spec, overrides)
        else:
            study = build_convergence_file({}, overrides, "command line")
        study.to_plan().validate()
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if show_plan:
        print_plan(study.resource_plan(), as_json)
        _warn_overlap(study)
        return
    try:
        summary = stable_summary(run_study(study_dir, study, show_progress=not as_json))
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        table = Table(title=f"convergence of {summary['metric']} ({study_dir})")
        for column in ("cube", "n", "mean", "95 % CI", "bias vs largest", "cubes needed", "CPU s/cube"):
            table.add_column(column)
        for row in summary["per_size"]:
            low, high = row["ci95"]
            table.add_row(f"{row['cube_voxels']}³", str(row["n_cubes"]), f"{row['mean']:.4g}",
                          f"[{low:.4g}, {high:.4g}]", f"{100 * row['bias_vs_largest']:+.2f} %",
                          str(row["cubes_needed"]), f"{row['solve_cpu_s']:.2f}")
        Console().print(table)
        rec = summary["recommended"]
        if rec:
            typer.echo(f"recommended: {rec['n_cubes']} cubes of {rec['cube_voxels']}³ "
                       f"(≈ {rec['solve_cpu_s']:.0f} CPU-s per design); plot: {study_dir / 'convergence.png'}")
        else:
            typer.echo("no size meets the tolerance against the largest size: add larger sizes")
        for error in summary["errors"]:
            typer.echo(f"failed: {error}", err=True)
    if summary["errors"] or summary["missing_cubes"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("convergence")(convergence)
