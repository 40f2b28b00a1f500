"""The controller, for real: a SIGKILLed `microloop run` resumes with nothing lost and nothing run
twice; failing jobs are retried then recorded with their error; infeasible designs are told to
the optimiser as infeasible, never as a 0; an invalid campaign fails before any job is submitted. Evaluations are real (procedural structures, TauFactor,
PyBaMM) at the lowest fidelity: 2 cubes of 24^3 voxels.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import tomli_w

from hpc.campaign.config import load_campaign
from hpc.campaign.controller import Campaign
from hpc.campaign.journal import read_journal

MICROLOOP = [sys.executable, "-m", "hpc.cli"]


def tiny_campaign(path: Path, **sections: dict) -> Path:
    """A campaign file with the cheapest real evaluations; `sections` override tables."""
    data = {
        "name": "tiny",
        "space": {"am_wt_frac": [0.86, 0.96], "porosity": [0.28, 0.42], "binder_adhesion": 0.5,
                  "mass_loading_mg_cm2": 15.0},
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
        "fidelity": {"n_cubes": 2, "cube_voxels": 24, "voxel_um": 1.0, "rel_tol": 1e-2},
        "optimizer": {"backend": "botorch", "n_initial": 2, "budget": 4, "max_concurrent": 2,
                      "seed": 3},
        "resources": {"executor": "local", "dask_workers": 1, "max_retries": 1,
                      "walltime_min": 10, "poll_interval_s": 0.5},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    path.write_text(tomli_w.dumps(data))
    return path


def _env() -> dict[str, str]:
    return dict(os.environ, PYBAMM_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1")


def _events(directory: Path, kind: str) -> list[dict]:
    return [e for e in read_journal(directory) if e["event"] == kind]


def _status(directory: Path) -> dict:
    out = subprocess.run([*MICROLOOP, "status", str(directory), "--json"], capture_output=True,
                         text=True, env=_env(), timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_sigkilled_controller_resumes_with_nothing_lost_and_nothing_run_twice(tmp_path):
    # budget 5 with 2 in flight: when the first result is in, at most 3 trials are proposed,
    # so the resumed controller must ask the optimiser again
    campaign = tiny_campaign(tmp_path / "tiny.toml", optimizer={"budget": 5})
    folder = tmp_path / "run"
    command = [*MICROLOOP, "run", str(campaign), "--dir", str(folder), "--quiet", "--no-report"]
    controller = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    try:
        # kill once something has completed while other trials are still running
        deadline = time.monotonic() + 300
        while True:
            assert controller.poll() is None, "the campaign ended before it could be killed"
            assert time.monotonic() < deadline, "no trial completed in time"
            completed = len(_events(folder, "completed"))
            if completed and len(_events(folder, "submitted")) > completed:
                break
            time.sleep(0.2)
        controller.send_signal(signal.SIGKILL)
        controller.wait(timeout=30)
    finally:
        if controller.poll() is None:
            controller.kill()
    before = _status(folder)
    assert before["budget"] == 5 and not before["finished"]
    assert before["counts"]["complete"] >= 1
    assert before["counts"]["complete"] + before["counts"]["running"] < 5
    saved = json.loads((folder / "optimizer_state.json").read_text())
    asks_at_kill = saved["state"]["counters"]["n_asks"]

    resumed = subprocess.run([*MICROLOOP, "resume", str(folder), "--quiet"], env=_env(),
                             capture_output=True, text=True, timeout=480)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    after = _status(folder)
    assert after["finished"]
    assert after["counts"] == {"complete": 5, "running": 0, "failed": 0, "pending": 0}
    assert after["best"]["objective"] > 0 and set(after["best"]["params"]) >= {"porosity"}
    # nothing proposed twice, nothing submitted twice, one evaluation (result) per trial
    proposed = [e["trial_id"] for e in _events(folder, "proposed")]
    assert sorted(proposed) == list(range(5))
    submitted = Counter(e["trial_id"] for e in _events(folder, "submitted"))
    assert submitted == Counter(range(5)), submitted
    assert not _events(folder, "retried")
    assert len(list((folder / "jobs").glob("*_result.pkl"))) == 5
    assert len(_events(folder, "campaign_started")) == 2
    # the optimiser continued: it holds every observation and asked again after the restart
    state = json.loads((folder / "optimizer_state.json").read_text())
    assert len(state["state"]["observations"]) == 5 and state["told"] == list(range(5))
    assert state["state"]["counters"]["n_asks"] > asks_at_kill
    with open(folder / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["complete"] * 5
    assert (folder / "report" / "summary.md").exists()  # the end-of-campaign report hook ran
    assert {"trial_id", "objective", "reason", "am_wt_frac", "porosity"} <= set(rows[0])

    # warm start: a new campaign over the same space starts from these 5 observations ...
    again = tiny_campaign(tmp_path / "again.toml", warm_start={"campaigns": [str(folder)]})
    warm = Campaign.create(load_campaign(again), tmp_path / "warm")
    warm.close()
    assert warm.optimizer.n_observations == 5
    assert _events(tmp_path / "warm", "warm_start")[0]["n_observations"] == 5
    # ... and one that varies another parameter says why it cannot use them
    other = tiny_campaign(tmp_path / "other.toml", warm_start={"campaigns": [str(folder)]},
                          space={"binder_adhesion": [0.2, 0.8]})
    cold = Campaign.create(load_campaign(other), tmp_path / "cold")
    cold.close()
    assert cold.optimizer.n_observations == 0
    assert "varies" in _events(tmp_path / "cold", "warm_start")[0]["skipped_reason"]


def _told_infeasible(state: dict) -> int:
    """How many points the optimiser holds as infeasible: observations with feasible False (a
    back-end with a feasibility model) or failures marked "infeasible:" (one without)."""
    observed = sum(1 for o in state["observations"] if o.get("feasible") is False)
    failed = sum(1 for f in state["failures"] if f["reason"].startswith("infeasible:"))
    return observed + failed


@pytest.mark.slow
def test_failing_jobs_are_retried_then_recorded_and_infeasible_designs_told_as_such(tmp_path):
    campaign = tiny_campaign(
        tmp_path / "faults.toml",
        # thick electrodes at 8 kW per cell: far beyond what they deliver, so infeasible
        space={"mass_loading_mg_cm2": 40.0},
        objective={"power_W": 8000.0},
        optimizer={"backend": "sobol", "budget": 4, "max_concurrent": 2},
        resources={"dask_workers": 0},
        faults=[{"trial_id": 0, "attempts": 1, "mode": "raise"},
                {"trial_id": 1, "attempts": 5, "mode": "kill"}],
    )
    controller = Campaign.create(load_campaign(campaign), tmp_path / "run")
    try:
        progress = controller.run(report=None)
    finally:
        controller.close()
    folder = tmp_path / "run"
    assert (progress.complete, progress.failed) == (3, 1)
    trials = controller.trials
    assert trials[0].status == "complete" and trials[0].attempt == 2
    retried = _events(folder, "retried")
    (injected,) = [e for e in retried if e["trial_id"] == 0]
    # the whole error survives: type, message and the frame that raised it (main kept the
    # last line only)
    assert "InjectedFault: injected fault: trial 0 attempt 1" in injected["reason"]
    assert "evaluation_task.py:" in injected["reason"]
    assert injected["failure"]["function"] == "__call__" and injected["failure"]["line"] > 0
    assert trials[1].status == "failed" and trials[1].attempt == 2
    assert "after 2 attempts" in trials[1].reason and "without a result" in trials[1].reason
    for trial_id in (0, 2, 3):  # the campaign went on around the failure
        assert trials[trial_id].objective is None      # infeasible: no value, never a 0
        assert trials[trial_id].feasible is False and trials[trial_id].reason
    with open(folder / "trials.csv") as handle:
        rows = {int(r["trial_id"]): r for r in csv.DictReader(handle)}
    assert rows[1]["status"] == "failed" and "without a result" in rows[1]["reason"]
    assert rows[2]["objective"] == "" and rows[2]["feasible"] == "False"
    state = json.loads((folder / "optimizer_state.json").read_text())["state"]
    assert all(o["value"] != 0.0 for o in state["observations"])
    assert _told_infeasible(state) == 3
    assert sum(1 for f in state["failures"] if "without a result" in f["reason"]) == 1

    # a warm start passes the infeasible points the same way: as infeasible, not as 0
    again = tiny_campaign(tmp_path / "again.toml", warm_start={"campaigns": [str(folder)]},
                          space={"mass_loading_mg_cm2": 40.0}, objective={"power_W": 8000.0},
                          optimizer={"backend": "sobol", "budget": 4, "max_concurrent": 2})
    warm = Campaign.create(load_campaign(again), tmp_path / "warm")
    warm.close()
    warm_state = warm.optimizer.state_dict()
    assert all(o["value"] != 0.0 for o in warm_state["observations"])
    assert _told_infeasible(warm_state) == 3


def test_invalid_campaign_fails_before_any_job_is_submitted(tmp_path):
    bad_key = tiny_campaign(tmp_path / "bad.toml", fidelity={"n_cubez": 2})
    done = subprocess.run([*MICROLOOP, "run", str(bad_key), "--dir", str(tmp_path / "a")],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 2
    assert "fidelity.n_cubez: unknown key" in done.stderr
    assert not (tmp_path / "a").exists()

    bad_set = tiny_campaign(tmp_path / "bad2.toml", cell={"parameter_set": "NoSuchCell2099"})
    done = subprocess.run([*MICROLOOP, "run", str(bad_set), "--dir", str(tmp_path / "b")],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 2
    assert "cell.parameter_set" in done.stderr and "Chen2020" in done.stderr
    assert not (tmp_path / "b").exists()


def test_run_refuses_an_existing_campaign_folder(tmp_path):
    campaign = tiny_campaign(tmp_path / "tiny.toml", optimizer={"budget": 1})
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "journal.jsonl").write_text('{"event": "campaign_started", "time": 0}\n')
    done = subprocess.run([*MICROLOOP, "run", str(campaign), "--dir", str(folder)],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 2 and "microloop resume" in done.stderr


def test_a_second_controller_on_the_same_folder_is_refused(tmp_path):
    from hpc.campaign.controller import CampaignError

    campaign = tiny_campaign(tmp_path / "c.toml", optimizer={"backend": "sobol", "budget": 1},
                             resources={"dask_workers": 0})
    first = Campaign.create(load_campaign(campaign), tmp_path / "run")
    try:
        with pytest.raises(CampaignError, match=f"pid {os.getpid()}"):
            Campaign.open(tmp_path / "run")
    finally:
        first.close()
    Campaign.open(tmp_path / "run").close()  # free again once the first one is gone


def test_journal_drops_a_torn_last_line(tmp_path):
    from hpc.campaign.journal import Journal

    journal = Journal(tmp_path)
    journal.append("proposed", trial_id=0, params={"porosity": 0.3})
    journal.close()
    with open(tmp_path / "journal.jsonl", "a") as handle:
        handle.write('{"event": "submitted", "trial_')  # a write cut by SIGKILL
    assert [e["event"] for e in read_journal(tmp_path)] == ["proposed"]
    journal = Journal(tmp_path)  # reopening repairs the tail before appending
    journal.append("submitting", trial_id=0, attempt=1)
    journal.close()
    assert [e["event"] for e in read_journal(tmp_path)] == ["proposed", "submitting"]


@pytest.mark.slow
def test_a_kill_between_submission_and_journaling_reattaches_to_the_started_job(tmp_path):
    campaign = tiny_campaign(tmp_path / "c.toml",
                             optimizer={"backend": "sobol", "budget": 1, "max_concurrent": 1},
                             resources={"dask_workers": 0})
    folder = tmp_path / "run"
    first = Campaign.create(load_campaign(campaign), folder)
    accepted = first.executor.submit_array

    def accept_then_die(fn, args_list, **options):  # the controller dies right after the job
        accepted(fn, args_list, **options)          # is accepted (options: the submission tag)
        raise KeyboardInterrupt

    first.executor.submit_array = accept_then_die
    with pytest.raises(KeyboardInterrupt):
        first.run()
    first.close()
    assert [e["event"] for e in read_journal(folder)][-1] == "submitting"
    marker = folder / "jobs" / "started" / "0-1.json"
    deadline = time.monotonic() + 60
    while not marker.exists():  # the job has started and said which job it is
        assert time.monotonic() < deadline
        time.sleep(0.2)

    second = Campaign.open(folder)
    try:
        progress = second.run(report=None)
    finally:
        second.close()
    assert progress.complete == 1
    submitted = _events(folder, "submitted")
    assert len(submitted) == 1 and submitted[0]["recovered"] is True
    assert len(list((folder / "jobs").glob("*_result.pkl"))) == 1  # it ran once


@pytest.mark.slow
def test_a_job_request_left_unread_by_a_stopped_fork_server_is_not_submitted_again(tmp_path):
    """The controller dies after writing a job request to its fork server's pipe and before
    reading the pid, while the server is stopped (SIGSTOP: a loaded machine's slow server).
    The resumed controller must wait for the old server to read it and re-attach to the job it
    forks; before, it found no job, submitted the trial again and both jobs ran."""
    import threading

    campaign = tiny_campaign(tmp_path / "c.toml",
                             optimizer={"backend": "sobol", "budget": 1, "max_concurrent": 1},
                             resources={"dask_workers": 0, "persistent_worker": True})
    folder = tmp_path / "run"
    first = Campaign.create(load_campaign(campaign), folder)
    first._warm_set = True   # no warm-up evaluation in the servers: it is not what is tested
    client = first.executor.scheduler._fork
    stopped: list[int] = []

    def write_then_die(request):   # the kill lands between the request and its answer
        server = client._server()  # started and warmed up, ready for requests
        os.kill(server.pid, signal.SIGSTOP)
        stopped.append(server.pid)
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        server.stdin.close()       # what the kernel does to the dead controller's pipe end
        raise KeyboardInterrupt

    client._ask = write_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            first.run()
        first.close()
        assert [e["event"] for e in read_journal(folder)][-1] == "submitting"
        (old_server,) = stopped
        resume_later = threading.Timer(4.0, os.kill, (old_server, signal.SIGCONT))
        resume_later.start()
        second = Campaign.open(folder)
        second._warm_set = True
        try:
            progress = second.run(report=None)
        finally:
            second.close()
        resume_later.join()
        deadline = time.monotonic() + 120   # the old server (our child) exits once its job
        while time.monotonic() < deadline:  # has ended: reap it, then count the results
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(old_server, os.WNOHANG)[0] == 0:
                    time.sleep(0.2)
                    continue
            break
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert progress.complete == 1
    submitted = _events(folder, "submitted")
    assert len(submitted) == 1 and submitted[0].get("recovered") is True, submitted
    assert len(list((folder / "jobs").glob("*_result.pkl"))) == 1  # it ran once
