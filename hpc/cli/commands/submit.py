"""`microloop submit CAMPAIGN`: run the campaign controller itself as a SLURM job.

The controller job is rendered from slurm_templates/controller.sh with the campaign's resources.
It survives its walltime: `resources.controller_requeue_signal_s` before it, SLURM signals the
job's shell, which stops the controller (the journal is durable), requeues the job and lifts
SLURM's hold on it; the requeued job resumes from the journal and appends to the same log.
No config string reaches a shell unescaped: shell values go through `shlex.quote`, #SBATCH values
are checked against a plain alphabet (hpc.campaign.config) and paths go to sbatch as separate arguments.
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import sys
from importlib import resources as importlib_resources
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hpc.machine.scheduler.slurm import REQUEUE_RELEASE_DELAY_S

if TYPE_CHECKING:
    from hpc.campaign.config import CampaignConfig

TEMPLATE = "controller.sh"


def render_controller(config: CampaignConfig, campaign: str, campaign_dir: Path,
                      launcher: list[str] | None = None, executor: str | None = None) -> str:
    """The controller's sbatch script for `config`; `launcher` is the microloop command."""
    from hpc.campaign.resources_config import resolve_role

    res = config.resources
    role = resolve_role(res, "controller")
    template = (importlib_resources.files("slurm_templates") / TEMPLATE).read_text()
    sbatch_lines = []
    if role.partition:
        sbatch_lines.append(f"#SBATCH --partition={shlex.quote(role.partition)}")
    if role.account:
        sbatch_lines.append(f"#SBATCH --account={shlex.quote(role.account)}")
    for key, value in sorted(role.sbatch_options.items()):
        sbatch_lines.append(f"#SBATCH --{key}={shlex.quote(str(value))}")
    run_options = ["--executor", executor] if executor else []
    values = {
        "job_name": safe_job_name(f"microloop-ctl-{config.name}"),
        "time_min": str(role.walltime_min),
        "signal_s": str(int(res.controller_requeue_signal_s)),
        "release_delay_s": str(int(math.ceil(REQUEUE_RELEASE_DELAY_S))),
        "cpus": str(int(res.controller_cpus)),
        "mem": f"{int(max(2.0, res.dask_memory_gb) * 1024)}M",
        "sbatch_lines": "\n".join(sbatch_lines),
        # the user's own shell lines ([resources.controller] setup), verbatim by design
        "setup_lines": "\n".join(role.setup),
        "campaign_dir": shlex.quote(str(campaign_dir)),
        "launcher": shlex.join(launcher or [sys.executable, "-m", "hpc.machine.controller_job"]),
        "campaign": shlex.quote(campaign),
        "run_options": shlex.join(run_options),
    }
    # one pass: a value that itself contains "{{...}}" (a setup line) is never expanded
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match.group(1)], template)


def safe_job_name(name: str) -> str:
    """A job name of plain characters only (it goes into an #SBATCH line)."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:64]


def sbatch_command(script: Path, campaign_dir: Path) -> list[str]:
    log = campaign_dir / "controller-%j.out"
    return ["sbatch", "--parsable", f"--output={log}", f"--chdir={campaign_dir}", str(script)]


def submit(
    campaign: str = typer.Argument(..., help="Campaign TOML file, or a built-in name: microloop campaigns list."),
    directory: Path = typer.Option(None, "--dir", help="Folder (default runs/<name>-<time>)."),
    executor: str = typer.Option(None, "--executor", help="Executor of the evaluations: local, "
                                 "slurm or debug (default: the campaign's resources.executor)."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print the script and the sbatch command only."),
) -> None:
    """Submit the campaign controller as a SLURM job (`sbatch`); it resumes itself if requeued."""
    from hpc.campaign.config import BUILTIN_CAMPAIGNS, ConfigError, load_campaign
    from hpc.campaign.controller import preflight
    from hpc.cli.commands.run import _default_dir

    try:
        config = load_campaign(campaign, {"resources": {"executor": executor}})
        preflight(config)
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if "\n" in campaign or (directory is not None and "\n" in str(directory)):
        typer.echo("error: campaign and --dir may not contain newlines", err=True)
        raise typer.Exit(2)
    folder = (directory or _default_dir(config.name)).absolute()
    target = campaign if campaign in BUILTIN_CAMPAIGNS else str(Path(campaign).absolute())
    script_text = render_controller(config, target, folder, executor=executor)
    if dry_run:
        typer.echo(script_text)
        typer.echo("# " + shlex.join(sbatch_command(folder / "controller.sbatch", folder)))
        return
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "controller.sbatch"
    script.write_text(script_text)
    done = subprocess.run(sbatch_command(script, folder), capture_output=True, text=True)
    if done.returncode != 0:
        typer.echo(f"error: sbatch refused the controller job: {done.stderr.strip()}", err=True)
        raise typer.Exit(1)
    job_id = done.stdout.strip().split(";")[0]
    typer.echo(f"submitted controller job {job_id}; follow it with `microloop status {folder}`")


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
