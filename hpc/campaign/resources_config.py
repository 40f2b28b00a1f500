"""Resources per role: the controller job, the evaluation jobs and the Dask worker jobs.

Why roles: on a real site the three run in different places — the controller on a small
long-running CPU allocation, evaluations on GPU (or big CPU) nodes, Dask workers on plain CPU
nodes for the campaign's whole life. Each role's table in ``[resources.<role>]`` says only what
differs; `resolve_role` fills the rest from the shared ``[resources]`` keys by these rules:

- partition, account: the role's own value, else the shared ``resources.partition/account``;
- qos, constraint, gres, setup: the role's own only (never inherited from another role);
- walltime: the role's own, else the controller's (``controller_walltime_min``) for the
  controller and the Dask workers (they live for the campaign), ``walltime_min`` for evaluations;
- ``resources.sbatch_options`` and ``gpus_per_task`` belong to the evaluations only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# SLURM names go into #SBATCH lines: a plain alphabet only (as hpc.campaign.config).
SLURM_NAME = re.compile(r"^[A-Za-z0-9_.\-,:=+/@%]+$")

#: Default of ``resources.max_consecutive_refusals``: permanent sbatch refusals in a row (none
#: accepted between them) after which the controller stops the campaign, since the same request
#: would only be refused again; each refused trial before that uses up one attempt.
MAX_CONSECUTIVE_REFUSALS = 3

Role = Literal["controller", "evaluation", "dask"]
ROLES: tuple[Role, ...] = ("controller", "evaluation", "dask")


def slurm_name(value: str | None) -> str | None:
    """A partition/account/qos/... name as sbatch takes it: no spaces, quotes or shell syntax."""
    if value is not None and not SLURM_NAME.match(value):
        raise ValueError(
            f"got {value!r}; allowed characters: letters, digits and _ . - , : = + / @ %"
        )
    return value

class RoleResources(BaseModel):
    """``[resources.controller]``, ``[resources.evaluation]`` or ``[resources.dask]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gres: str | None = None  # e.g. "gpu:1" or "gpu:a100:2"
    walltime_min: int | None = Field(default=None, ge=1, le=60 * 24 * 30)
    #: shell lines run before the job's command (``module load ...``, ``export X=...``);
    #: run verbatim: they are the user's own shell, one command per entry.
    setup: list[str] = Field(default_factory=list)

    @field_validator("partition", "account", "qos", "constraint", "gres")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        return slurm_name(value)

    @field_validator("setup")
    @classmethod
    def _one_line_each(cls, lines: list[str]) -> list[str]:
        for line in lines:
            if "\n" in line or "\r" in line or not line.strip():
                raise ValueError(f"setup line {line!r}: one non-empty command per entry, "
                                 "no newlines")
        return lines


@dataclass(frozen=True)
class ResolvedRole:
    """What one role's jobs are submitted with, after the inheritance rules."""

    role: Role
    partition: str | None
    account: str | None
    walltime_min: int
    #: long sbatch option name -> value (qos, constraint, gres; evaluation: + sbatch_options)
    sbatch_options: dict[str, str] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    gpus_per_task: int = 0


def resolve_role(resources: Any, role: Role) -> ResolvedRole:
    """One role's resources from a `ResourcesConfig` (rules in the module docstring)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}; allowed: {', '.join(ROLES)}")
    own: RoleResources = getattr(resources, role)
    options: dict[str, str] = {}
    gpus = 0
    if role == "evaluation":
        options.update(resources.sbatch_options)
        gpus = int(resources.gpus_per_task)
    for key in ("qos", "constraint", "gres"):
        value = getattr(own, key)
        if value is not None:
            options[key] = value
    default_walltime = (resources.walltime_min if role == "evaluation"
                        else resources.controller_walltime_min)
    return ResolvedRole(
        role=role, partition=own.partition or resources.partition,
        account=own.account or resources.account,
        walltime_min=int(own.walltime_min or default_walltime), sbatch_options=options,
        setup=tuple(own.setup), gpus_per_task=gpus,
    )
