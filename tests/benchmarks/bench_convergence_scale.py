"""What a convergence study at scale really cost, from the records its processes left.

Run a study first (on SLURM: sources made in array tasks, cubes solved in array tasks of MPI
ranks), then summarise its folder:

    microloop convergence study.toml --dir runs/c1000 --json > runs/c1000.json
    python tests/benchmarks/bench_convergence_scale.py runs/c1000

It prints one JSON object: cubes solved; CPU seconds of the source-generation processes, the
solve ranks (their whole life, imports included) and the tasks' launchers, against the CPU
seconds inside the cube solves (the useful work); wall seconds from the first solve process's
start to the last one's end and per task (the load balance); the largest peak memory of a
rank and of a source task against what the study requested (`--plan`). The memory of a task
is the peak RSS of its processes (getrusage), measured, not estimated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hpc.campaign.convergence_config import estimate_rank_mem_gb, estimate_source_mem_gb
from jobs.convergence import (
    SOURCE_MARKERS,
    TASK_RECORDS,
    collect,
)


def _read(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def summarise(study_dir: Path) -> dict:
    plan, cubes, missing = collect(study_dir)
    sources = _read(study_dir / SOURCE_MARKERS)
    records = _read(study_dir / TASK_RECORDS)
    ranks = [r for r in records if "rank" in r]
    launchers = [r for r in records if "rank" not in r]
    tasks: dict[int, list[dict]] = {}
    for record in ranks:
        tasks.setdefault(record["task_index"], []).append(record)
    task_wall = {index: max(r["end"] for r in rs) - min(r["start"] for r in rs)
                 for index, rs in tasks.items()}
    largest = max(plan.cube_voxels)
    return {
        "cubes_solved": len(cubes), "cubes_missing": missing, "cube_voxels": plan.cube_voxels,
        "source_volumes": len(sources), "source_voxels": plan.source_voxels,
        "solve_tasks": len(tasks), "solve_processes": len(ranks),
        "cpu_s": {
            "source_processes": round(sum(s.get("process_cpu_s", s["cpu_s"]) for s in sources), 1),
            "source_generation": round(sum(s["cpu_s"] for s in sources), 1),
            "solve_processes": round(sum(r["cpu_s"] for r in ranks), 1),
            "launchers": round(sum(r["cpu_s"] for r in launchers), 1),
            "inside_cube_solves": round(sum(c["solve_cpu_s"] for c in cubes), 1),
        },
        "wall_s": {
            "solves_first_start_to_last_end": round(max(r["end"] for r in ranks)
                                                    - min(r["start"] for r in ranks), 1),
            "per_task_min": round(min(task_wall.values()), 1),
            "per_task_max": round(max(task_wall.values()), 1),
        },
        "cubes_per_process": [min(r["cubes"] for r in ranks), max(r["cubes"] for r in ranks)],
        "peak_rss_mib": {
            "rank_max": round(max(r["peak_rss_mib"] for r in ranks), 1),
            "rank_requested": round(estimate_rank_mem_gb(largest, plan.backend, plan.metric)
                                    * 1024, 1),
            "source_max": round(max(s.get("peak_rss_mib", 0.0) for s in sources), 1)
            if sources else None,
            "source_requested": round(estimate_source_mem_gb(plan.source_voxels) * 1024, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    print(json.dumps(summarise(parser.parse_args().study_dir), indent=1))


if __name__ == "__main__":
    main()
