"""`microloop status DIR`: counts by status, the best design, running jobs and their states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def campaign_status(directory: Path) -> dict[str, Any]:
    """The status of a campaign folder from its journal (no controller needs to be running)."""
    import tomllib

    from hpc.campaign.controller import FROZEN_CONFIG, JOBS_FOLDER, best_trial
    from hpc.campaign.journal import read_journal
    from hpc.campaign.safe_paths import check_campaign_folder
    from hpc.campaign.trials import fold_events
    from hpc.machine.executor import ExecutorError, _pid_alive, query_slurm_states
    from hpc.machine.scheduler.local import PID_TAKEN, job_process_alive, pid_taken

    frozen = Path(directory) / FROZEN_CONFIG
    if not frozen.exists():
        raise FileNotFoundError(f"{directory} is not a campaign folder (no {FROZEN_CONFIG})")
    check_campaign_folder(directory)  # status reads what resume would: no links out
    config = tomllib.loads(frozen.read_text())
    budget = int(config.get("optimizer", {}).get("budget", 0))
    executor = config.get("resources", {}).get("executor", "local")
    trials = fold_events(read_journal(Path(directory)))
    counts = {"complete": 0, "running": 0, "failed": 0, "pending": 0}
    running = []
    for trial in sorted(trials.values(), key=lambda t: t.trial_id):
        if trial.status == "complete":
            counts["complete"] += 1
        elif trial.status == "failed":
            counts["failed"] += 1
        elif trial.status == "submitted":
            counts["running"] += 1
            running.append({"trial_id": trial.trial_id, "job_id": trial.job_id,
                            "attempt": trial.attempt, "state": None})
        else:
            counts["pending"] += 1
    counts["pending"] += max(0, budget - len(trials))
    if running and executor == "slurm":
        try:
            states = query_slurm_states([r["job_id"] for r in running])
        except ExecutorError as error:
            states = {}
            for item in running:
                item["state"] = f"unknown ({error})"
        for item in running:
            item["state"] = item["state"] or states.get(item["job_id"], "PENDING")
    elif running and executor == "local":
        jobs = Path(directory) / JOBS_FOLDER
        for item in running:
            done = (jobs / f"{item['job_id']}_0_result.pkl").exists()
            held = item["job_id"].isdigit() and _pid_alive(int(item["job_id"]))
            alive = held and job_process_alive(jobs, item["job_id"])
            item["state"] = "FINISHED" if done else ("RUNNING" if alive else "GONE")
            if item["state"] == "GONE":  # the local memory guard's record says how it ended
                item["state"] = _local_end(jobs, item["job_id"]) or "GONE"
            if item["state"] == "GONE" and held and pid_taken(jobs, item["job_id"]):
                # its pid went to another process
                item["state"] = f"GONE ({PID_TAKEN})"
    best = best_trial(trials)
    events = read_journal(Path(directory))
    lifecycle = [e for e in events
                 if e["event"] in ("campaign_started", "campaign_stopped", "campaign_finished")]
    stopped = (lifecycle[-1].get("reason") if lifecycle
               and lifecycle[-1]["event"] == "campaign_stopped" else None)
    return {
        "directory": str(directory),
        "name": config.get("name", ""),
        "executor": executor,
        "budget": budget,
        "counts": counts,
        "best": None if best is None else {"trial_id": best.trial_id, "params": best.params,
                                           "objective": best.objective},
        "running": running,
        "finished": len(trials) >= budget and counts["running"] + counts["pending"] == 0,
        "controller": _live_controller(Path(directory)),
        "stopped": stopped,   # why the controller stopped itself (repeated refusals), if it did
    }


def _live_controller(directory: Path) -> dict[str, Any] | None:
    """The controller whose lease on the folder is fresh (hpc.machine.folder_lock), or None."""
    import time

    from hpc.campaign.folder import LOCK_NAME
    from hpc.machine.folder_lock import LEASE_S, read_owner

    try:
        owner = read_owner((directory / LOCK_NAME).read_text())
    except OSError:
        return None
    if owner is None or not owner.heartbeat or time.time() - owner.heartbeat >= LEASE_S:
        return None
    return {"pid": owner.pid, "host": owner.host, "slurm_job_id": owner.slurm_job_id,
            "heartbeat_age_s": round(time.time() - owner.heartbeat, 1)}


def _local_end(jobs: Path, job_id: str) -> str:
    """'GONE (killed by signal 9 ...)' from the memory guard's record, '' without one."""
    from hpc.machine.scheduler.memory_guard import describe, record_path

    try:
        record = json.loads(record_path(jobs, job_id).read_text())
    except (OSError, ValueError):
        return ""
    return f"GONE ({describe(record)})" if isinstance(record, dict) else ""


#: `status --json` (docs/formats.md)
STATUS_SCHEMA_VERSION = "microloop.status/1"


def status(
    directory: Path = typer.Argument(..., help="A campaign folder."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show a campaign's progress."""
    try:
        info = campaign_status(directory)
    except (FileNotFoundError, ValueError) as error:  # JournalError, TOML, links out: named
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except OSError as error:  # a folder where a file belongs, no permission: the path named
        typer.echo(f"error: {directory} cannot be read as a campaign folder: "
                   f"{error.strerror}: {error.filename}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"schema_version": STATUS_SCHEMA_VERSION, **info}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    c = info["counts"]
    console.print(f"[bold]{info['name']}[/] in {info['directory']} ({info['executor']}): "
                  f"{c['complete']} complete, {c['running']} running, {c['failed']} failed, "
                  f"{c['pending']} pending of budget {info['budget']}")
    if info["controller"]:
        owner = info["controller"]
        job = f", SLURM job {owner['slurm_job_id']}" if owner["slurm_job_id"] else ""
        console.print(f"controller: pid {owner['pid']} on {owner['host']}{job} (heartbeat "
                      f"{owner['heartbeat_age_s']:.0f} s ago)")
    if info["stopped"]:
        console.print(f"[bold red]stopped:[/] {info['stopped']}")
    if info["best"]:
        console.print(f"best: objective {info['best']['objective']:.6g} "
                      f"(trial {info['best']['trial_id']}) at {info['best']['params']}")
    if info["running"]:
        table = Table("trial", "job id", "attempt", "state")
        for item in info["running"]:
            table.add_row(str(item["trial_id"]), str(item["job_id"]), str(item["attempt"]),
                          str(item["state"]))
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
