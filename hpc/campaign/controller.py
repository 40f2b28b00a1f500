"""The asynchronous campaign controller: ask -> submit -> poll -> tell -> persist.

A finished evaluation frees a slot that is refilled at once (up to `max_concurrent`). Every
state change is appended to ``journal.jsonl`` (fsync) BEFORE it is acted on, so a controller
killed at any instant resumes with nothing lost and nothing run twice:

- proposed but never submitted -> submitted on resume (never proposed again);
- submitted -> re-attached by job id (its result is read when it finishes);
- completed/failed -> told to the optimiser again only if the saved optimiser state predates it.

``optimizer.mode = "async"`` (default): proposals are computed in a worker thread
(hpc.campaign.proposer) while this loop keeps polling, journaling and submitting; each ask asks
for the free slots plus those expected to free while it runs, the ready points wait in a buffer
and fill slots at the next poll cycle. Results arriving during an ask are journaled at once and
told to the optimiser when the ask returns. Every proposal passes a duplicate guard over every
point the campaign holds. ``"sync"``: the ask runs inline, batch by batch, exactly reproducible.

Persistence grows with the campaign only through appends: the journal is the truth (one fsync'ed
line per event); ``optimizer_state.json`` is a snapshot written after every ask (in the worker
thread) and after every ``snapshot_every(n)`` tells, ``trials.csv`` a snapshot rewritten every
``snapshot_every(n)`` events (n = trials so far, so the amortised cost per event stays flat) or
``CSV_MAX_AGE_S`` seconds, and at the end. A resume re-tells what the saved state lacks.
"""

from __future__ import annotations

import errno
import inspect
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.campaign.config import CampaignConfig, ConfigError, dump_campaign, load_frozen_campaign
from hpc.campaign.folder import FROZEN_CONFIG, JOBS_FOLDER, LOCK_NAME, OPTIMIZER_STATE
from hpc.campaign.journal import Journal, json_safe, read_journal
from hpc.campaign.proposer import (
    AskFailed,
    AskOutcome,
    BackgroundAsker,
    DuplicateGuard,
    ReleaseRate,
    ask_size,
)
from hpc.campaign.safe_paths import check_campaign_folder
from hpc.campaign.trials import Trial, apply_event, fold_events, write_trials_csv
from hpc.campaign.warm_start import (  # noqa: F401
    WarmObservation,
    source_task,
    warm_start_observations,
)
from hpc.machine.executor import Executor, ExecutorError, JobStatus
from jobs.contract.result import EvaluationFailure, EvaluationResult, ResultSchemaError

log = logging.getLogger(__name__)

#: trials.csv is rewritten at least this often (seconds) while events change it.
CSV_MAX_AGE_S = 30.0
#: How long a resume waits for an earlier controller's fork server to read its last job
#: request before it looks for the cut submission's jobs (then it stops, resubmitting nothing).
RESUME_SETTLE_S = 60.0
#: False: the old resume, which looked at once (a request still unread in the dead controller's
#: pipe could start a second job for the trial later); kept for the test that shows it.
USE_SETTLE = True
#: Consecutive asks that gave no new point (all duplicates) before the campaign stops with an
#: error instead of asking forever.
MAX_EMPTY_ASKS = 3


def snapshot_every(n_items: int) -> int:
    """Events between two snapshots of a table of `n_items`: at least 20, and a tenth of the
    table, so rewriting the whole table costs O(1) amortised per event at any campaign size."""
    return max(20, n_items // 10)


class CampaignError(RuntimeError):
    """A campaign folder that cannot be started or resumed as asked."""


@dataclass
class Progress:
    """What a progress display shows."""

    budget: int
    complete: int
    failed: int
    running: int
    pending: int
    best_objective: float | None
    best_params: dict[str, float] | None


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(json_safe(data), handle, allow_nan=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def preflight(config: CampaignConfig) -> dict[str, Any]:
    """Everything checkable before a job is submitted; returns the evaluation spec dict."""
    try:
        spec = config.to_spec_dict()
    except ValueError as error:
        raise ConfigError(f"campaign does not make a valid evaluation spec: {error}") from None
    from hpc.campaign.memory_estimate import check_evaluation_memory

    fid = config.fidelity
    try:  # an evaluation that cannot fit in mem_gb would be OOM-killed on every attempt
        check_evaluation_memory(fid.cube_voxels, fid.n_cubes, fid.mpi_ranks,
                                config.resources.mem_gb, fid.backend)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    try:
        config.space.to_bayes_space()
    except ValueError as error:
        raise ConfigError(f"space: {error}") from None
    from bayes.optimizer import get_backend_class

    accepted = set(getattr(get_backend_class(config.optimizer.backend), "OPTIONS", {}))
    accepted |= set(getattr(get_backend_class(config.optimizer.backend), "COMMON_OPTIONS", {}))
    unknown = sorted(set(config.optimizer.options) - accepted)
    if unknown:
        raise ConfigError(f"optimizer.options: unknown key(s) {unknown} for backend "
                          f"{config.optimizer.backend!r}; allowed: {sorted(accepted)}")
    from kernels.cell import model as kcell

    if config.cell.packaging:
        fields = set(getattr(kcell.Packaging4680, "__dataclass_fields__", {}))
        unknown = sorted(set(config.cell.packaging) - fields)
        if unknown:
            raise ConfigError(f"cell.packaging: unknown key(s) {unknown}; "
                              f"allowed: {sorted(fields)}")
    import pybamm

    if config.cell.parameter_set not in pybamm.parameter_sets:
        raise ConfigError(f"cell.parameter_set: {config.cell.parameter_set!r} is not a PyBaMM "
                          f"parameter set; e.g. Chen2020, Ecker2015, OKane2022")
    from kernels.metrics import solvers

    backends = set(getattr(solvers, "BACKENDS", {})) | set(getattr(solvers, "BACKEND_MODULES", {}))
    if backends and config.fidelity.backend not in backends:
        raise ConfigError(f"fidelity.backend: {config.fidelity.backend!r} is not available here; "
                          f"allowed: {sorted(backends)}")
    if config.resources.executor == "slurm":
        import shutil

        missing = [tool for tool in ("sbatch", "sacct", "scontrol") if shutil.which(tool) is None]
        if missing:
            raise ConfigError(f"resources.executor = 'slurm' but {', '.join(missing)} not found "
                              "on PATH; use executor = 'local' on a machine without SLURM")
    return spec


class Campaign:
    """One campaign folder and the controller that drives it."""

    def __init__(self, directory: Path, config: CampaignConfig, lock: Any = None) -> None:
        self.dir = Path(directory).absolute()
        self.config = config
        self.spec = preflight(config)
        self.space = config.space.to_bayes_space()
        self.param_names = list(config.space.bounds()) + [
            n for n in config.space.fixed() if n not in config.space.bounds()
        ]
        self.budget = config.optimizer.budget
        #: a multi-objective campaign's further outcomes: trials.csv names a column for each
        self.outcome_labels = [o.label() for o in (*config.objective.also,
                                                   *config.objective.constraints)]
        self.max_concurrent = config.optimizer.max_concurrent
        self.max_attempts = 1 + config.resources.max_retries
        self.faults = {f.trial_id: f.model_dump() for f in config.faults}
        #: [fidelity] levels: each trial runs at the level the optimiser chose (its own spec)
        self.multi_fidelity = bool(config.fidelity.levels)
        self.level_specs = [config.level_spec_dict(i) for i in range(len(config.fidelity.levels))]
        self._lock = lock or _lock_campaign(self.dir)
        events = read_journal(self.dir)
        try:
            self.trials: dict[int, Trial] = fold_events(events)
        except ResultSchemaError as error:
            self._lock.close()
            raise CampaignError(f"{self.dir}: its journal holds results this microloop cannot "
                                f"read ({error})") from None
        self._had_warm_start = any(e["event"] == "warm_start" for e in events)
        self.journal = Journal(self.dir)
        # before the optimiser is loaded: loading may journal (warm start, a restart's events)
        self._dirty = True  # trials.csv needs rewriting
        self._events_since_csv = 0
        self._csv_written_at = 0.0
        self.optimizer, self._told = self._load_optimizer()
        self._untold: list[int] = []  # finished trials not told yet (sync batch; async ask)
        self._tells_since_save = 0
        # async mode: the background ask, its ready points, and the duplicate guard
        self.asker = BackgroundAsker(self.optimizer, after_ask=self._save_state_of)
        self._buffer: list[dict[str, float]] = []
        self._releases = ReleaseRate()
        self._last_ask_s = 0.0
        self._empty_asks = 0
        self.ask_log: list[AskOutcome] = []  # this run's asks (what they cost)
        self.duplicates_rejected = 0
        radius = getattr(self.optimizer, "options", {}).get("duplicate_radius")
        self._guard = DuplicateGuard(self.space, 1e-3 * self.space.dim ** 0.5
                                     if radius is None else float(radius))
        for trial in sorted(self.trials.values(), key=lambda t: t.trial_id):
            self._guard.add(trial.params)
        res = config.resources
        self._job_env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                         "PYBAMM_DISABLE_TELEMETRY": "true"}
        self.executor = Executor.from_resources(
            res, self.dir / JOBS_FOLDER,
            job_name=re.sub(r"[^A-Za-z0-9_.\-]", "_", f"microloop-{config.name}")[:64],
            cpus_per_task=max(res.cpus_per_task, config.ranks_per_task),
            max_concurrent=config.optimizer.max_concurrent, worker_env=self._job_env,
        )
        self.dask = None
        self._warm_set = False

    # ---- creation and reopening ---------------------------------------------------------

    @classmethod
    def create(cls, config: CampaignConfig, directory: Path) -> Campaign:
        """A new campaign folder (refuses one that already has a journal: use resume)."""
        directory = Path(directory)
        if read_journal(directory):
            raise CampaignError(f"{directory} already holds a campaign; continue it with "
                                f"`microloop resume {directory}` or choose another --dir")
        preflight(config)  # before anything is written
        if directory.exists():
            check_campaign_folder(directory)
        directory.mkdir(parents=True, exist_ok=True)
        dump_campaign(config, directory / FROZEN_CONFIG)
        _create_store_root(directory)
        return cls(directory, config)

    @classmethod
    def open(cls, directory: Path, overrides: dict[str, dict[str, Any]] | None = None,
             wait_s: float = 0.0) -> Campaign:
        """Reopen a campaign folder from its frozen config and journal; `wait_s`: how long to
        wait for a controller still driving it to let go of its lock."""
        frozen = Path(directory) / FROZEN_CONFIG
        if not frozen.exists():
            raise CampaignError(f"{directory} is not a campaign folder (no {FROZEN_CONFIG})")
        check_campaign_folder(directory)
        config = load_frozen_campaign(frozen, overrides)
        lock = _lock_campaign(Path(directory).absolute(), wait_s)  # before any write: a refused resume
        try:                                                # must not change a running campaign
            if overrides:
                dump_campaign(config, frozen)
            return cls(Path(directory), config, lock=lock)
        except BaseException:
            lock.close()
            raise

    # ---- the optimiser --------------------------------------------------------------------

    def _load_optimizer(self) -> tuple[Any, set[int]]:
        from bayes.optimizer import get_backend_class, make_optimizer

        path = self.dir / OPTIMIZER_STATE
        restored = _restore_optimizer(path, self.space) if path.exists() else None
        if restored is not None:
            optimizer, told = restored
        else:
            opt = self.config.optimizer
            backend, options = self.config.bayes_optimizer()  # several objectives: botorch_pareto
            accepted = getattr(get_backend_class(backend), "OPTIONS", {})
            if "n_initial" in accepted:
                options.setdefault("n_initial", opt.n_initial)
            if "background_refit" in accepted and opt.mode == "async" and not self.multi_fidelity:
                # the asks are timed by the campaign anyway: never wait for a refit
                options.setdefault("background_refit", "when_ready")
            if self.multi_fidelity:
                options["fidelity_costs"] = self.config.fidelity.level_costs
            plan = self._warm_start_plan()
            tasks = [task for _, _, task, _ in plan if task is not None]
            if tasks:   # [warm_start] mode = "prior_mean": the sources model the prior mean
                backend = "botorch_transfer"
                options.update(sources=tasks, n_initial=self.config.warm_start.n_initial)
            optimizer = make_optimizer(self.space, backend=backend, seed=opt.seed, **options)
            told = set()
            self._warm_start(optimizer, plan)
        self._tell_missing(optimizer, told)
        return optimizer, told

    def _tell_missing(self, optimizer: Any, told: set[int]) -> None:
        """Tell results the saved state does not include yet (finished after the last save)."""
        for trial in sorted(self.trials.values(), key=lambda t: t.trial_id):
            if trial.trial_id in told or not trial.done:
                continue
            self._tell(optimizer, trial)
            told.add(trial.trial_id)

    def _tell(self, optimizer: Any, trial: Trial) -> None:
        """A completed trial is an observation (an infeasible one without a value); a failed
        one is a failure, never a number."""
        if trial.status == "complete" and trial.result is not None:
            # the design's objective spread over its cubes is its known observation noise;
            # None (unknown, e.g. one cube) is passed as None for the optimiser to fill. With
            # several objectives the value is their vector (None when any is infeasible)
            value, feasible, reason = trial.result.told()
            tell_observation(optimizer, self._optimizer_point(trial), value,
                             trial.result.noise_var, feasible, reason)
        else:
            optimizer.tell_failed([trial.params], [trial.reason or "failed"])

    def _optimizer_point(self, trial: Trial) -> dict[str, float]:
        """The point as the optimiser knows it: with its fidelity level when multi-fidelity."""
        if not self.multi_fidelity:
            return trial.params
        from bayes.multi_fidelity import FIDELITY_KEY

        return {**trial.params, FIDELITY_KEY: trial.fidelity_level}

    def _save_optimizer(self) -> None:
        self._save_state_of(self.optimizer)

    def _save_state_of(self, optimizer: Any) -> None:
        """Snapshot the optimiser with the trials it was told (called in the ask thread too:
        no tell happens while an ask runs, so `_told` matches the state)."""
        _write_json_atomic(self.dir / OPTIMIZER_STATE,
                           {"told": sorted(self._told), "state": optimizer.state_dict()})
        self._tells_since_save = 0

    def _warm_start_plan(self) -> list[tuple[str, list[WarmObservation], dict | None, str]]:
        """Per warm-start source: (source, observations to tell as they are, source task to
        model or None, why it was skipped or ""). A source that matches (or differs only in
        what `allow` names) is told; with mode = "prior_mean" one that differs in fidelity,
        generator, power or C-rate becomes a source task (bayes/transfer.py)."""
        warm = self.config.warm_start
        plan = []
        for source in [*warm.campaigns, *warm.from_file]:
            observations, why = warm_start_observations(Path(source), self.config, self.space)
            task = None
            if why and warm.mode == "prior_mean":
                task, task_why = source_task(Path(source), self.config, self.space)
                why = "" if task is not None else f"{why}; not modelled either: {task_why}"
            plan.append((source, observations, task, why))
        return plan

    def _warm_start(self, optimizer: Any, plan: list) -> None:
        """Tell earlier campaigns' observations when their context matches (warm_start.py);
        journal what each source gave (observations told, a modelled source task, or why not)."""
        for source, observations, task, why in plan:
            for seen in observations:   # infeasible points as infeasible, as in this campaign
                params = seen.params
                if self.multi_fidelity:
                    from bayes.multi_fidelity import FIDELITY_KEY

                    params = {**params, FIDELITY_KEY: seen.fidelity_level}
                tell_observation(optimizer, params, seen.value, seen.noise_var,
                                 seen.feasible, seen.reason)
            modelled = "" if task is None else (
                "source task (its surrogate as the prior mean)" if "surrogate" in task else
                f"source task ({len(task['observations'])} observations as the prior mean)")
            if not self._had_warm_start:
                self.journal_event("warm_start", source=source,
                                   n_observations=len(observations), skipped_reason=why,
                                   modelled=modelled)
            if why:
                log.warning("warm start from %s skipped: %s", source, why)
            elif modelled:
                log.info("warm start: %s modelled as a %s", source, modelled)
            else:
                log.info("warm start: %d observations from %s", len(observations), source)

    # ---- journal + persistence ------------------------------------------------------------

    def journal_event(self, event: str, **fields: Any) -> None:
        record = self.journal.append(event, **fields)
        apply_event(self.trials, record)
        self._dirty = True
        self._events_since_csv += 1

    def _persist(self, force: bool = False) -> None:
        """Rewrite trials.csv (a snapshot: the journal is the truth) when events changed the
        table and either `snapshot_every` events passed, it is `CSV_MAX_AGE_S` old, or `force`."""
        if not self._dirty:
            return
        due = (self._events_since_csv >= snapshot_every(len(self.trials))
               or time.monotonic() - self._csv_written_at >= CSV_MAX_AGE_S)
        if force or due:
            write_trials_csv(self.dir, self.trials, self.param_names, self.outcome_labels)
            self._dirty = False
            self._events_since_csv = 0
            self._csv_written_at = time.monotonic()

    # ---- the loop -------------------------------------------------------------------------

    def in_flight(self) -> list[Trial]:
        return [t for t in self.trials.values() if not t.done]

    def progress(self) -> Progress:
        counts = {"complete": 0, "failed": 0, "submitted": 0, "proposed": 0}
        for trial in self.trials.values():
            counts[trial.status] += 1
        best = best_trial(self.trials, len(self.config.fidelity.levels) - 1
                          if self.multi_fidelity else None)
        return Progress(self.budget, counts["complete"], counts["failed"], counts["submitted"],
                        counts["proposed"] + self.budget - len(self.trials),
                        best.objective if best else None, best.params if best else None)

    def finished(self) -> bool:
        return len(self.trials) >= self.budget and not self.in_flight()

    def run(self, on_progress: Callable[[Progress], None] | None = None,
            stop_after_s: float | None = None,
            report: Callable[[Path], None] | None = None) -> Progress:
        """Drive the campaign until the budget is spent (or `stop_after_s` passes); then call
        `report(folder)` (the CLI passes `hpc.analysis.report.write_report_logged`), so the
        campaign package never imports the analysis package."""
        try:
            self.journal_event("campaign_started", pid=os.getpid(), budget=self.budget,
                               resumed=bool(self.trials))
            return self._drive(time.monotonic(), on_progress, stop_after_s, report)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):  # a stop, not a failed attempt
                raise CampaignError(f"the disk holding {self.dir} is full ({error}); nothing "
                                    "was lost: free space, then `microloop resume "
                                    f"{self.dir}`") from error
            raise

    def _drive(self, started: float, on_progress: Callable[[Progress], None] | None,
               stop_after_s: float | None, report: Callable[[Path], None] | None) -> Progress:
        try:
            self._recover_submissions()
        except ExecutorError as error:  # cannot tell whether cut submissions are queued
            raise CampaignError(f"cannot check the scheduler for jobs a killed controller "
                                f"submitted ({error}); nothing was resubmitted: try the "
                                "resume again when the scheduler answers") from error
        if not self.finished():
            self.dask = _start_dask(self.config, self.dir)
        failure: AskFailed | None = None
        try:
            self._loop(started, on_progress, stop_after_s)
        except AskFailed as error:  # the background ask raised: stop with its reason
            failure = error
        except BaseException as error:
            late = self._finish_ask()  # the folder stays consistent; the error propagates
            if late is not None:       # and names the ask's failure too
                log.error("the background ask failed as well: %s", late)
                error.add_note(f"the background ask failed as well: {late}")
            self._close_dask()
            raise
        late = self._finish_ask()
        self._close_dask()
        if failure is not None or late is not None:
            raise self._stopped_by_failed_ask(failure or late) from (failure or late)
        self._persist(force=True)
        progress = self.progress()
        if self.finished():
            self.journal_event("campaign_finished", complete=progress.complete,
                               failed=progress.failed)
            if report is not None:
                report(self.dir)
        if on_progress:
            on_progress(progress)
        return progress

    def _loop(self, started: float, on_progress: Callable[[Progress], None] | None,
              stop_after_s: float | None) -> None:
        res = self.config.resources
        while not self.finished():
            self._submit_waiting()
            # sync mode, and multi-fidelity campaigns (their level choice and the final
            # top-level confirmation live in the inline ask), ask in this thread
            if self.config.optimizer.mode == "sync" or self.multi_fidelity:
                self._refill()
                self._poll_once()
            else:  # results first, so the slots they free are refilled in this cycle
                self._poll_once()
                self._refill_async()
            self._persist()
            if on_progress:
                on_progress(self.progress())
            if self.finished():
                break
            if stop_after_s is not None and time.monotonic() - started > stop_after_s:
                break
            # wakes as soon as a background ask is done: its points wait < one cycle
            self.asker.wait(res.poll_interval_s)

    def _close_dask(self) -> None:
        self.executor.close()   # a persistent worker ends once its running jobs have
        if self.dask is not None:
            self.dask.close()
            self.dask = None

    def _stopped_by_failed_ask(self, failure: AskFailed) -> CampaignError:
        """Journal why the campaign stopped (status and the report show it) and snapshot the
        folder; the error to raise. Nothing is lost: every result is journaled and told."""
        reason = f"the optimiser failed: {failure}"
        log.error("stopping the campaign: %s", reason)
        self.journal_event("campaign_stopped", reason=reason, error_type=failure.error_type)
        self._persist(force=True)
        return CampaignError(f"{reason}. Every result so far is in the journal and told to the "
                             f"saved optimiser state; fix the cause (traceback above), then "
                             f"`microloop resume {self.dir}`")

    def close(self) -> None:
        failure = self._finish_ask()  # only when an ask was started outside run()
        try:
            if failure is not None:
                raise self._stopped_by_failed_ask(failure) from failure
        finally:
            self.journal.close()
            self._lock.close()  # releases the flock

    def _recover_submissions(self) -> None:
        """Trials whose submission was cut by a kill: re-attach to the job if it started (its
        marker) or is still queued or running (the submission's tag, one scheduler query per
        cut submission), so resuming never runs a trial twice at once."""
        from hpc.machine.evaluation_task import started_marker

        tagged: dict[str, dict[int, str]] = {}
        cut = [t for t in self.trials.values() if t.status == "proposed" and t.submitting]
        if cut and USE_SETTLE:   # no request of the dead controller may start a job later
            self.executor.settle_submissions(RESUME_SETTLE_S)
        for trial in sorted(cut, key=lambda t: t.trial_id):
            marker = started_marker(self.dir, trial.trial_id, trial.attempt)
            job_id = None
            if marker.exists():
                job_id = json.loads(marker.read_text())["job_id"]
            elif trial.submission is not None and trial.submission_index is not None:
                if trial.submission not in tagged:
                    tagged[trial.submission] = self.executor.find_submission(trial.submission)
                job_id = tagged[trial.submission].get(int(trial.submission_index))
            if job_id is not None:
                log.info("trial %d: re-attaching to job %s found after a restart",
                         trial.trial_id, job_id)
                self.journal_event("submitted", trial_id=trial.trial_id, attempt=trial.attempt,
                                   job_id=job_id, recovered=True)

    def _refill(self) -> None:
        """Ask the optimiser for as many new trials as there are free slots."""
        in_flight = self.in_flight()
        if self.config.optimizer.mode == "sync" and in_flight:
            return
        self._tell_untold()
        free = min(self.max_concurrent - len(in_flight), self.budget - len(self.trials))
        if free <= 0:
            return
        confirmed = 0   # the first `confirmed` points are confirmations at the top level
        left = self.budget - len(self.trials)
        confirm = self.optimizer.n_confirmations if self.multi_fidelity else 0
        if self.multi_fidelity and left <= confirm:
            # the last evaluations confirm at the top fidelity the recommendation (and, by the
            # optimiser's option confirm, the best cheap-level design), proposed once everything
            # else has been told
            if in_flight:
                return
            try:
                points = self.optimizer.confirmations()[:left]
                confirmed = len(points)
            except ValueError as error:   # no feasible design yet: nothing to confirm
                log.warning("no recommendation to confirm (%s); the last evaluations are "
                            "ordinary proposals", error)
                points = self.optimizer.ask(left, [])
            if 0 < confirmed < left:   # no cheap design left to confirm: an ordinary proposal
                points += self.optimizer.ask(left - confirmed, [dict(p) for p in points])
        else:
            pending = [self._optimizer_point(t) for t in in_flight]
            if self.multi_fidelity:  # keep the last slots for the confirmations
                free = min(free, left - confirm)
            points = self.optimizer.ask(free, pending)
        if not points and not in_flight:
            raise CampaignError(f"the {self.config.optimizer.backend} optimiser proposed no new "
                                f"point with nothing in flight; {len(self.trials)} of "
                                f"{self.budget} evaluations done")
        new_ids = []
        for index, point in enumerate(points):
            trial_id = len(self.trials)
            extra: dict[str, Any] = {}
            if self.multi_fidelity:
                from bayes.multi_fidelity import FIDELITY_KEY

                point = dict(point)
                extra = {"fidelity_level": int(point.pop(FIDELITY_KEY)),
                         "recommendation": index < confirmed}
            params = {**self.config.space.fixed(), **{k: float(v) for k, v in point.items()}}
            self.journal_event("proposed", trial_id=trial_id, params=params, **extra)
            self._guard.add(params)
            new_ids.append(trial_id)
        self._save_optimizer()
        self._submit([self.trials[i] for i in new_ids])

    # ---- async mode: the ask in a worker thread ----------------------------------------------

    def _refill_async(self) -> None:
        """Take a finished background ask, tell what arrived meanwhile, fill free slots from the
        buffer, and start the next ask when one is due (never more than one at a time)."""
        outcome = self.asker.take()
        if outcome is not None:
            self._took(outcome)
        if not self.asker.busy:
            self._flush_tells()
        in_flight = self.in_flight()
        free = min(self.max_concurrent - len(in_flight), self.budget - len(self.trials))
        if free > 0 and self._buffer:
            take, self._buffer = self._buffer[:free], self._buffer[free:]
            new_ids = []
            for params in take:
                trial_id = len(self.trials)
                self.journal_event("proposed", trial_id=trial_id, params=params)
                new_ids.append(trial_id)
            self._submit([self.trials[i] for i in new_ids])
            in_flight = self.in_flight()
            free = min(self.max_concurrent - len(in_flight), self.budget - len(self.trials))
        if self.asker.busy:
            return
        n = ask_size(free, len(self._buffer), self.budget - len(self.trials),
                     self._releases.per_s(time.monotonic()), self._last_ask_s,
                     self.max_concurrent)
        if n <= 0:
            return
        if self._empty_asks >= MAX_EMPTY_ASKS:
            raise CampaignError(
                f"the {self.config.optimizer.backend} optimiser proposed no new point in "
                f"{self._empty_asks} asks in a row (every proposal repeated an earlier trial); "
                f"{len(self.trials)} of {self.budget} evaluations done")
        pending = [t.params for t in in_flight] + self._buffer
        self.asker.start(n, pending)

    def _took(self, outcome: AskOutcome) -> None:
        """A finished ask: its new points into the buffer, duplicates dropped (a slot they would
        have filled is asked for again)."""
        self.ask_log.append(outcome)
        self._last_ask_s = outcome.wall_s
        fixed = self.config.space.fixed()
        points = [{**fixed, **{k: float(v) for k, v in p.items()}} for p in outcome.points]
        kept, rejected = self._guard.keep_new(points)
        if rejected:
            self.duplicates_rejected += rejected
            log.warning("%d of %d proposals repeated an earlier or pending trial; asking again",
                        rejected, len(points))
        self._empty_asks = 0 if kept else self._empty_asks + 1
        self._buffer.extend(kept)
        log.info("ask(%d, %d pending) at %d observations: %.1f CPU-s, %.1f s wall, %d new",
                 outcome.n_requested, outcome.n_pending, outcome.n_observations, outcome.cpu_s,
                 outcome.wall_s, len(kept))

    def _flush_tells(self) -> None:
        """Tell the optimiser the trials that finished while it was busy (trial order);
        snapshot its state every `snapshot_every` tells (the journal holds them all anyway)."""
        if not self._untold:
            return
        for trial_id in sorted(self._untold):
            self._tell(self.optimizer, self.trials[trial_id])
            self._told.add(trial_id)
        self._tells_since_save += len(self._untold)
        self._untold = []
        if self._tells_since_save >= snapshot_every(len(self._told)):
            self._save_optimizer()

    def _finish_ask(self) -> AskFailed | None:
        """Wait for a running ask (its state snapshot included), tell what is waiting and save:
        the folder is consistent when the controller stops. A failed ask is returned, for the
        caller to record and raise (its points, had it any, were never proposals)."""
        failure = None
        if self.asker.busy:
            try:
                outcome = self.asker.take(block=True)
            except AskFailed as error:
                failure = error
            else:
                if outcome is not None:
                    self.ask_log.append(outcome)
        if self.config.optimizer.mode != "sync" and (self._untold or self._tells_since_save):
            self._flush_tells()
            self._save_optimizer()
        return failure

    def _submit_waiting(self) -> None:
        """Trials proposed (or set back for a retry) that have no live job."""
        waiting = [t for t in self.trials.values() if t.status == "proposed"]
        if waiting:
            self._submit(sorted(waiting, key=lambda t: t.trial_id))

    def _submit(self, trials: list[Trial]) -> None:
        if not trials:
            return
        from hpc.machine.evaluation_task import EvaluationTask

        address = self.dask.address if self.dask else None
        args = []
        tag = uuid.uuid4().hex[:16]  # journaled first: a restart finds the jobs by it
        for index, trial in enumerate(trials):
            attempt = trial.attempt if trial.submitting else trial.attempt + 1
            self.journal_event("submitting", trial_id=trial.trial_id, attempt=attempt,
                               submission=tag, index=index)
            spec = self.spec if trial.fidelity_level is None \
                else self.level_specs[trial.fidelity_level]
            args.append((str(self.dir), trial.trial_id, trial.params, spec, attempt,
                         address, self.faults.get(trial.trial_id), self._job_env))
        if not self._warm_set:   # a persistent worker's one warm-up: this campaign's work
            from hpc.machine.evaluation_task import warm_up_evaluation

            self._warm_set = True
            self.executor.set_warm((warm_up_evaluation, (
                str(self.dir / JOBS_FOLDER / "warm-up"), trials[0].params, args[0][3],
                address is None)))
        try:
            job_ids = self.executor.submit_array(EvaluationTask(), args, tag=tag)
        except ExecutorError as error:
            for trial in trials:
                self._attempt_failed(self.trials[trial.trial_id], f"submission failed: {error}")
            return
        stop = self.executor.consecutive_refusals >= self.executor.max_consecutive_refusals
        for trial, job_id, arg in zip(trials, job_ids, args, strict=True):
            if stop and self.executor.refusal(job_id) is not None:
                continue  # left "submitting": a resume submits it again, no attempt used up
            self.journal_event("submitted", trial_id=trial.trial_id, attempt=arg[4],
                               job_id=job_id)
        if stop:
            self._stop_refused()

    def _stop_refused(self) -> None:
        """The scheduler refused the same kind of request N times in a row: every further
        submission would be refused too, so stop instead of failing trial after trial."""
        count, message = self.executor.consecutive_refusals, self.executor.last_refusal
        reason = (f"the scheduler refused {count} submissions in a row (permanent refusals, "
                  f"resources.max_consecutive_refusals = "
                  f"{self.executor.max_consecutive_refusals}); the last said: {message}")
        log.error("stopping the campaign: %s", reason)
        self.journal_event("campaign_stopped", reason=reason, refusals=count)
        self._persist()
        raise CampaignError(f"{reason}. Fix the resources (partition, account, QOS, GRES) in "
                            f"{self.dir / FROZEN_CONFIG}, then `microloop resume {self.dir}`; "
                            "the refused trials are submitted again without using up a retry")

    def _poll_once(self) -> None:
        running = {t.job_id: t.trial_id for t in self.trials.values()
                   if t.status == "submitted" and t.job_id}
        if not running:
            return
        try:
            statuses = self.executor.poll(list(running))
        except ExecutorError as error:  # the scheduler did not answer: try again next cycle
            log.warning("poll failed: %s", error)
            return
        for job_id, status in statuses.items():
            trial = self.trials[running[job_id]]
            self._handle_status(trial, job_id, status)

    def _handle_status(self, trial: Trial, job_id: str, status: JobStatus) -> None:
        if status.state == "finished":
            outcome = self.executor.outcome(job_id)
            if outcome.ok and isinstance(outcome.value, dict):
                try:
                    result = EvaluationResult.from_dict(outcome.value)
                except (ValueError, TypeError, KeyError) as error:  # not a result we can read
                    self._attempt_failed(trial, EvaluationFailure.from_exception(error))
                    return
                self.journal_event("completed", trial_id=trial.trial_id,
                                   result=result.to_dict())
                self._after_done(self.trials[trial.trial_id])
            else:
                error = outcome.error or f"job returned {type(outcome.value).__name__}"
                self._attempt_failed(trial, EvaluationFailure.from_traceback_text(error))
        elif status.state == "failed":
            self._attempt_failed(trial, EvaluationFailure("JobFailed", status.detail))

    def _attempt_failed(self, trial: Trial, failure: EvaluationFailure | str) -> None:
        """Retry, or record the failure: its one-line reason (type, message, innermost frame)
        in `reason`, the whole `EvaluationFailure` in `failure`."""
        if isinstance(failure, str):
            failure = EvaluationFailure("SubmissionError", failure)
        reason = failure.reason()
        if trial.attempt < self.max_attempts:
            log.warning("trial %d attempt %d failed (%s); retrying", trial.trial_id,
                        trial.attempt, reason)
            self.journal_event("retried", trial_id=trial.trial_id, attempt=trial.attempt,
                               reason=reason, failure=failure.to_dict())
        else:
            log.warning("trial %d failed after %d attempts: %s", trial.trial_id, trial.attempt,
                        reason)
            self.journal_event("failed", trial_id=trial.trial_id,
                               reason=f"after {trial.attempt} attempts: {reason}",
                               failure=failure.to_dict())
            self._after_done(self.trials[trial.trial_id])

    def _after_done(self, trial: Trial) -> None:
        self._releases.add(time.monotonic())
        self._untold.append(trial.trial_id)
        if self.config.optimizer.mode != "sync" and not self.asker.busy:
            self._flush_tells()

    def _tell_untold(self) -> None:
        """Sync mode: tell a finished batch in trial order (independent of completion order)."""
        if not self._untold:
            return
        for trial_id in sorted(self._untold):
            self._tell(self.optimizer, self.trials[trial_id])
            self._told.add(trial_id)
        self._untold = []
        self._save_optimizer()


def _restore_optimizer(path: Path, space: Any) -> tuple[Any, set[int]] | None:
    """The saved optimiser, or None (with a warning) when the file is damaged: the journal
    holds every observation, so the caller rebuilds the optimiser from it instead of stopping."""
    from bayes.optimizer import optimizer_from_state

    try:
        saved = json.loads(path.read_bytes().decode("utf-8"))
        return optimizer_from_state(space, saved["state"]), {int(t) for t in saved["told"]}
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError, UnicodeDecodeError
        log.warning("%s is damaged (%s: %s); rebuilding the optimiser from the journal",
                    path, type(error).__name__, error)
        return None


def _lock_campaign(directory: Path, wait_s: float = 0.0) -> Any:
    """Hold the folder's lock (flock + heartbeat lease, hpc.machine.folder_lock): two
    controllers appending to one journal would submit everything twice. The kernel drops the
    flock when the process dies, even by SIGKILL; the lease covers file systems whose locks
    stay on one node. `wait_s`: how long to wait for a live controller to finish."""
    from hpc.machine.folder_lock import FolderLockedError, acquire

    try:
        return acquire(directory, LOCK_NAME, wait_s=wait_s)
    except FolderLockedError as error:
        raise CampaignError(str(error)) from None


def _create_store_root(directory: Path) -> None:
    """Create the campaign's zarr store once, here: array tasks starting at the same instant
    would otherwise race to create its root group (zarr raises ContainsGroupError)."""
    import zarr

    from jobs.store import store_path

    zarr.open_group(store_path(directory), mode="a")


def best_trial(trials: dict[int, Trial], top_level: int | None = None) -> Trial | None:
    """The best completed trial; in a multi-fidelity campaign, among trials at the top level
    (`top_level`; default: the highest level seen) only: a cheap level's value is not the
    campaign's objective."""
    done = [t for t in trials.values() if t.status == "complete" and t.objective is not None]
    levels = [t.fidelity_level for t in trials.values() if t.fidelity_level is not None]
    if levels:
        top = max(levels) if top_level is None else top_level
        done = [t for t in done if t.fidelity_level == top]
    return max(done, key=lambda t: (t.objective, -t.trial_id)) if done else None


def tell_observation(optimizer: Any, params: dict[str, float], value: float | None,
                     noise_var: float | None, feasible: bool, reason: str = "") -> None:
    """Tell one evaluated design: an infeasible one as infeasible (value None), never as 0.

    Back-ends whose `tell` takes `feasible` learn the infeasible region; an older back-end
    without it records the infeasible point as a failure (kept away from, not modelled)."""
    if "feasible" in inspect.signature(optimizer.tell).parameters:
        optimizer.tell(params, value, noise_var=noise_var, feasible=feasible)
    elif feasible:
        optimizer.tell([params], [value], noise_var=[noise_var])
    else:
        optimizer.tell_failed([params], [f"infeasible: {reason}"])


def _start_dask(config: CampaignConfig, directory: Path) -> Any:
    """The campaign's Dask cluster from its Dask role (hpc.campaign.resources_config)."""
    from hpc.machine.dask_cluster import start_campaign_dask

    return start_campaign_dask(config.resources, directory / "dask")
