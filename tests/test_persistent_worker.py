"""The persistent worker of the local executor (resources.persistent_worker, fork_server.py):
jobs forked from one warmed process keep the contract of fresh job processes.

What is checked, each against something nobody here chose: the same trial evaluated in a fresh
Python process and in a job forked from a warmed (and already used) worker gives the identical
result; a job that crashes (SIGABRT) or overruns its walltime fails with the kernel's / the
walltime's name while the worker goes on with the next job; the cell model is built once, in
the worker, and no job builds another (the jobs' own log lines); a campaign with a crashing trial
journals that trial's failure and completes the others.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_campaign import tiny_campaign  # noqa: E402

from hpc.campaign.config import load_campaign  # noqa: E402
from hpc.campaign.controller import Campaign  # noqa: E402
from hpc.machine.evaluation_task import EvaluationTask, warm_up_evaluation  # noqa: E402
from hpc.machine.executor import EVALUATION_PRELOAD, Executor  # noqa: E402
from hpc.machine.scheduler.base import SchedulerState  # noqa: E402
from hpc.machine.scheduler.local import PID_TAKEN, LocalScheduler  # noqa: E402
from hpc.machine.scheduler.memory_guard import record_path  # noqa: E402

JOB_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYBAMM_DISABLE_TELEMETRY": "true"}
PARAMS = {"am_wt_frac": 0.9, "porosity": 0.36, "binder_adhesion": 0.5,
          "mass_loading_mg_cm2": 15.0}
OTHER = {"am_wt_frac": 0.88, "porosity": 0.4, "binder_adhesion": 0.5,
         "mass_loading_mg_cm2": 15.0}


def _wait(executor: Executor, ids: list[str], timeout_s: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = executor.poll(ids)
        if all(s.state in ("finished", "failed") for s in statuses.values()):
            return statuses
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)


def _comparable(result: dict) -> dict:
    """A result without what differs between any two runs: wall times, host, job id."""
    result = json.loads(json.dumps(result))
    for key in ("timings_s", "host", "job_id"):
        result.pop(key, None)
    if result.get("cell"):
        result["cell"].pop("wall_s", None)
    result["metrics"].pop("solve_wall_s")
    return result


def _differences(a: object, b: object, path: str = "") -> list[str]:
    """The paths where two JSON values differ (to show what, not only that)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b))
                for d in _differences(a.get(key), b.get(key), f"{path}.{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _job_log(folder: Path, job_id: str) -> str:
    return (folder / f"{job_id}_0_log.out").read_text()


@pytest.mark.slow
def test_a_reused_worker_gives_the_result_of_a_fresh_process_and_builds_the_model_once(
        tmp_path, monkeypatch):
    for key, value in JOB_ENV.items():
        monkeypatch.setenv(key, value)
    spec = load_campaign(tiny_campaign(tmp_path / "tiny.toml")).to_spec_dict()
    task = EvaluationTask()
    # no Dask cluster: the cell sweeps run in the job, so the worker's warm-up builds the model
    fresh = Executor("local", tmp_path / "fresh_jobs", walltime_min=10)
    (fresh_id,) = fresh.submit_array(task, [(str(tmp_path / "a"), 5, PARAMS, spec, 1, None,
                                             None, JOB_ENV)])
    forked = Executor("local", tmp_path / "forked_jobs", walltime_min=10, persistent_worker=True,
                      preload=EVALUATION_PRELOAD, worker_env=JOB_ENV)
    forked.set_warm((warm_up_evaluation, (str(tmp_path / "scratch"), OTHER, spec, True)))
    # the worker first evaluates another design (trial 3), then trial 5 in a job forked after it
    first = forked.submit_array(task, [(str(tmp_path / "b"), 3, OTHER, spec, 1, None, None,
                                        JOB_ENV)])
    assert _wait(forked, first)[first[0]].state == "finished"
    second = forked.submit_array(task, [(str(tmp_path / "b"), 5, PARAMS, spec, 1, None, None,
                                         JOB_ENV)])
    statuses = {**_wait(forked, second), **_wait(fresh, [fresh_id])}
    assert all(s.state == "finished" for s in statuses.values()), statuses
    reference, reused = fresh.outcome(fresh_id), forked.outcome(second[0])
    assert reference.ok and reused.ok, (reference.error, reused.error)
    assert reused.value["objective"]["feasible"]
    assert not _differences(_comparable(reused.value), _comparable(reference.value))
    assert reused.value["job_id"] == second[0] != reference.value["job_id"]
    # one worker served both jobs, and they are its children
    assert forked.scheduler._fork.starts == 1
    server_pid = forked.scheduler._fork._process.pid
    for job_id in (*first, *second):
        log = _job_log(tmp_path / "forked_jobs", job_id)
        # the model was built once, in the worker's warm-up: each job found it and built none
        assert f"cell models: 1 before this job, 1 after (process {job_id}, parent " \
               f"{server_pid})" in log, log[-2000:]
    assert "cell models: None before this job, 1 after" in _job_log(tmp_path / "fresh_jobs",
                                                                       fresh_id)
    server_log = (tmp_path / "forked_jobs" / "fork_server.log").read_text()
    assert "warm-up: cell models built in this process: 1" in server_log, server_log[-2000:]
    assert not (tmp_path / "scratch").exists()   # the warm-up leaves nothing behind
    forked.close()


def test_a_crashed_or_hung_job_fails_with_its_reason_and_the_worker_goes_on(tmp_path):
    # walltime 0.05 min = 3 s; no preload: the worker's contract, not the evaluation's
    executor = Executor("local", tmp_path, walltime_min=0.05, persistent_worker=True)
    crashed = executor.submit_array(os.abort, [()])
    hung = executor.submit_array(time.sleep, [(120,)])
    statuses = _wait(executor, crashed + hung, timeout_s=120)
    assert statuses[crashed[0]].state == "failed"
    assert "killed by signal 6" in statuses[crashed[0]].detail
    assert statuses[hung[0]].state == "failed"
    assert re.search(r"timed out: killed after its walltime of 0.05 min",
                     statuses[hung[0]].detail), statuses[hung[0]].detail
    # the next job runs, in the same worker, in a process of its own (its pid is its job id)
    after = executor.submit_array(os.getpid, [(), ()])
    statuses = _wait(executor, after, timeout_s=120)
    assert all(s.state == "finished" for s in statuses.values()), statuses
    assert [executor.outcome(job_id).value for job_id in after] == [int(i) for i in after]
    assert executor.scheduler._fork.starts == 1
    assert json.loads(record_path(tmp_path, hung[0]).read_text())["signal"] == 9
    executor.close()


def test_a_persistent_worker_needs_the_local_executor(tmp_path):
    with pytest.raises(ValueError, match="persistent_worker = true needs executor = 'local'"):
        load_campaign(tiny_campaign(tmp_path / "c.toml", resources={
            "executor": "debug", "persistent_worker": True}))
    with pytest.raises(ValueError, match="persistent_worker needs executor kind 'local'"):
        Executor("debug", tmp_path, persistent_worker=True)


@pytest.mark.slow
def test_a_campaign_on_a_persistent_worker_fails_only_the_crashing_trial(tmp_path):
    campaign = tiny_campaign(
        tmp_path / "faults.toml",
        optimizer={"backend": "sobol", "budget": 4, "max_concurrent": 2},
        resources={"dask_workers": 0, "persistent_worker": True},
        faults=[{"trial_id": 1, "attempts": 5, "mode": "kill"}],
    )
    controller = Campaign.create(load_campaign(campaign), tmp_path / "run")
    try:
        progress = controller.run(report=None)
    finally:
        controller.close()
    assert (progress.complete, progress.failed) == (3, 1)
    trials = controller.trials
    assert trials[1].status == "failed" and trials[1].attempt == 2
    assert "killed by signal 9" in trials[1].reason and "without a result" in trials[1].reason
    for trial_id in (0, 2, 3):
        assert trials[trial_id].status == "complete" and trials[trial_id].objective > 0
    assert controller.executor.scheduler._fork.starts == 1   # one worker for the campaign


def test_forked_jobs_are_found_by_their_tag_and_polled_from_a_new_scheduler(tmp_path):
    # what a resumed controller has: a new scheduler on the folder, nothing else
    submitter = LocalScheduler(tmp_path, persistent_worker=True, walltime_min=5)
    ids = submitter.submit_array(time.sleep, [(60.0,), (60.0,)], tag="t0a1", offset=3)
    try:
        reader = LocalScheduler(tmp_path)
        assert reader.find_tagged("t0a1") == {3: ids[0], 4: ids[1]}
        assert reader.find_tagged("other") == {}
        assert {s.phase for s in reader.states(ids).values()} == {"running"}
        reader.cancel(ids[:1])   # submitit's task ignores SIGTERM: a forked job's tree is killed
        deadline = time.monotonic() + 60
        while reader.states(ids[:1])[ids[0]].phase != "ended":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "killed by signal 9" in reader.states(ids[:1])[ids[0]].detail
        assert reader.states(ids[1:])[ids[1]].phase == "running"
    finally:
        submitter.cancel(ids)
        submitter.close()


def test_a_job_reaped_by_another_schedulers_fork_server_is_not_gone_before_its_record(
        tmp_path, monkeypatch):
    # the race the tag test above hit under load: the fork server reaps the job, and only then
    # writes its exit record; a scheduler that does not own the server must not call the job
    # GONE in between (it would end without the record's reason), only once no record came
    import subprocess

    from hpc.machine.scheduler import local
    from hpc.machine.scheduler.memory_guard import record_path

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()   # reaped: neither alive nor a zombie, as after the fork server's wait4
    job_id = str(ended.pid)
    reader = local.LocalScheduler(tmp_path)
    assert reader.states([job_id])[job_id].phase == "running"   # waiting for its record
    record_path(tmp_path, job_id).write_text(json.dumps(
        {"exit_code": None, "signal": 9, "killed_by_guard": False, "forked": True}))
    state = reader.states([job_id])[job_id]
    assert state.phase == "ended" and "killed by signal 9" in state.detail
    other = str(ended.pid)   # same pid, no record: gone once the server's time has passed
    record_path(tmp_path, job_id).unlink()
    monkeypatch.setattr(local, "RECORD_WAIT_S", 0.0)
    assert reader.states([other])[other].phase == "ended"


LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


@pytest.mark.skipif(not os.access(LAST_PID, os.W_OK),
                    reason="needs a writable /proc/sys/kernel/ns_last_pid (Linux, root) to make "
                           "the next process take a chosen pid")
def test_a_reused_process_id_does_not_hand_on_an_earlier_jobs_result(tmp_path):
    # job ids are pids, and pids wrap (pid_max 32768 here): a new job that gets the pid of an
    # earlier job of the folder must not read as ended with that job's result and record
    executor = Executor("local", tmp_path, walltime_min=5, persistent_worker=True)
    [first] = executor.submit_array(math.factorial, [(5,)])
    assert _wait(executor, [first], timeout_s=120)[first].state == "finished"
    assert executor.outcome(first).value == 120
    time.sleep(1.5)   # a pid comes round long after its job ended (local.STALE_MARGIN_S)
    for _ in range(20):   # another process may take the pid first: then try again
        LAST_PID.write_text(str(int(first) - 1))
        [second] = executor.submit_array(time.sleep, [(2,)])
        if second == first:
            break
        _wait(executor, [second], timeout_s=120)
    else:
        pytest.skip("the pid was taken by other processes 20 times")
    assert executor.poll([second])[second].state == "running"   # not the old job's end
    assert _wait(executor, [second], timeout_s=120)[second].state == "finished"
    assert executor.outcome(second).value is None                # time.sleep's, not 120
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "stale").iterdir()) == sorted(
        [f"{first}_0_result", f"{first}_memory"])
    executor.close()


# ---- a re-attached job whose pid now belongs to another process ---------------------------
#
# A local job id is a pid. The controller is killed, one of its jobs ends (without a result:
# killed, or its fork server gone too) and the kernel gives the pid to another process. The
# cases below make the next fork take that pid (ns_last_pid) and give it to what a machine
# running campaigns really starts: another campaign's submitit job, or a fork server (the
# resumed controller's own). Both pass the command-line check that alone decided before.

def _start_on_pid(pid: int, start):
    """`start()` (a Popen) made to run on `pid`; None if other processes took it 20 times.

    First past the next clock tick of the kernel's process start times (1/CLK_TCK s): the
    forced pid comes round within milliseconds here, where a real reuse needs pid_max forks,
    and a stranger started in the job's own tick would carry the job's identity."""
    time.sleep(3.0 / os.sysconf("SC_CLK_TCK"))
    for _ in range(20):
        LAST_PID.write_text(str(pid - 1))
        process = start()
        if process.pid == pid:
            # Popen returns once exec has begun; the new command line shows a moment later
            deadline = time.monotonic() + 10
            while not Path(f"/proc/{pid}/cmdline").read_bytes():
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.01)
            return process
        _kill_tree(process.pid)
        process.wait()
    return None


def _kill_tree(pid: int) -> None:
    """End a process this test started, with its children (submitit's task ignores SIGTERM)."""
    import signal

    from hpc.machine.scheduler.memory_guard import process_tree

    for member in reversed(process_tree(pid)):
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _other_campaigns_job(folder: Path, held: list):
    """Starts a submitit job of another folder; `held` keeps its handle (submitit cancels a
    job whose handle is deleted)."""
    import submitit

    def start():
        held.append(submitit.LocalExecutor(folder).submit(time.sleep, 60.0))
        return held[-1]._process
    return start


def _wait_ended(scheduler: LocalScheduler, job_id: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while (state := scheduler.states([job_id])[job_id]).phase != "ended":
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    return state


needs_last_pid = pytest.mark.skipif(
    not os.access(LAST_PID, os.W_OK),
    reason="needs a writable /proc/sys/kernel/ns_last_pid (Linux, root) to make the next "
           "process take a chosen pid")


@needs_last_pid
def test_a_resumed_scheduler_reads_a_job_whose_pid_went_to_another_job_as_ended(tmp_path):
    # the submitit path: the job dies without a result while its controller is down, and
    # another campaign's submitit job gets its pid. Before, the resumed scheduler read that
    # stranger as the job RUNNING (for its whole life) and `cancel` sent it SIGTERM.
    jobs = tmp_path / "jobs"
    submitter = LocalScheduler(jobs, walltime_min=5)
    [job_id] = submitter.submit_array(os._exit, [(3,)])
    _wait_ended(submitter, job_id)           # reaped: its pid is free
    assert not submitter.has_result(job_id)
    del submitter                            # the controller is gone
    held: list = []
    stranger = _start_on_pid(int(job_id), _other_campaigns_job(tmp_path / "other", held))
    if stranger is None:
        pytest.skip("the pid was taken by other processes 20 times")
    try:
        resumed = Executor("local", jobs, walltime_min=5, result_grace_s=0.0)
        status = resumed.poll([job_id])[job_id]
        assert status.state == "failed", status
        assert PID_TAKEN in status.detail and "without a result" in status.detail
        resumed.cancel([job_id])
        time.sleep(0.5)
        assert stranger.poll() is None        # never signalled: it is not ours
    finally:
        _kill_tree(stranger.pid)
        stranger.wait()


@needs_last_pid
def test_a_forked_job_whose_pid_went_to_a_new_fork_server_is_ended_and_never_killed(tmp_path):
    # the fork-server path: the server dies with the controller (no exit record), the job
    # then dies too, and the pid goes to a new fork server. Before, the resumed scheduler read
    # the job RUNNING, and `cancel` SIGKILLed the new server's whole process tree.
    import ctypes
    import signal

    from hpc.machine.scheduler.local import ForkServerClient

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36   # orphans come to this test (pid 1 may not reap them)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    jobs = tmp_path / "jobs"
    stranger = None
    try:
        submitter = LocalScheduler(jobs, walltime_min=5, persistent_worker=True)
        [job_id] = submitter.submit_array(time.sleep, [(60.0,)])
        server = submitter._fork._process
        server.kill()
        server.wait()
        os.kill(int(job_id), signal.SIGKILL)
        os.waitpid(int(job_id), 0)             # reaped here (the subreaper): its pid is free
        assert not record_path(jobs, job_id).exists()
        del submitter
        other = ForkServerClient(tmp_path / "other", walltime_min=5, mem_gb=None, preload=(),
                                 warm=None, env=None)
        (tmp_path / "other").mkdir()
        stranger = _start_on_pid(int(job_id), other._server)
        if stranger is None:
            pytest.skip("the pid was taken by other processes 20 times")
        resumed = LocalScheduler(jobs, walltime_min=5, persistent_worker=True)
        state = resumed.states([job_id])[job_id]
        assert state.phase == "ended" and PID_TAKEN in state.detail, state
        resumed.cancel([job_id])
        time.sleep(0.5)
        assert stranger.poll() is None         # the new server lives
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        if stranger is not None:
            stranger.kill()
            stranger.wait()


@pytest.mark.parametrize("forked", [False, True], ids=["submitit", "forked"])
def test_a_job_that_runs_on_across_a_controller_restart_still_reads_running(tmp_path, forked):
    # the identity check must not turn a live job into a false "ended" (its trial would run
    # twice): a new scheduler on the folder reads it RUNNING, finds it by its tag, cancels it
    submitter = LocalScheduler(tmp_path, walltime_min=5, persistent_worker=forked)
    [job_id] = submitter.submit_array(time.sleep, [(60.0,)], tag="t1a1")
    try:
        assert json.loads((tmp_path / f"{job_id}_process.json").read_text())["start_ticks"] > 0
        resumed = LocalScheduler(tmp_path, walltime_min=5)
        assert resumed.states([job_id])[job_id] == SchedulerState("running", "RUNNING")
        assert resumed.find_tagged("t1a1") == {0: job_id}
        resumed.cancel([job_id])
        state = _wait_ended(resumed, job_id)
        assert PID_TAKEN not in state.detail   # ended by the cancel, not taken for a stranger
    finally:
        submitter.cancel([job_id])
        submitter.close()


def test_a_job_exiting_while_its_process_is_read_is_not_taken_for_a_stranger(tmp_path,
                                                                           monkeypatch):
    # the race the fresh-clone CI hit: a killed job's command line is read while it still
    # runs, its /proc stat a moment later is gone (it exited in between). Reading no identity
    # is not another process's: the job is ending, not GONE with its pid taken (which, on the
    # code before, ended it at once with the wrong reason)
    from hpc.machine.scheduler import local

    submitter = LocalScheduler(tmp_path, walltime_min=5, persistent_worker=True)
    [job_id] = submitter.submit_array(time.sleep, [(60.0,)])
    try:
        resumed = LocalScheduler(tmp_path, walltime_min=5)
        assert resumed.states([job_id])[job_id] == SchedulerState("running", "RUNNING")
        monkeypatch.setattr(local, "process_identity", lambda pid: None)  # the stat vanished
        state = resumed.states([job_id])[job_id]
        assert PID_TAKEN not in state.detail and state.phase == "running", state
        assert not local.pid_taken(tmp_path, job_id)
    finally:
        submitter.cancel([job_id])
        submitter.close()


def test_a_folder_from_before_identity_records_reads_its_live_job_as_before(tmp_path):
    # a campaign started before `<pid>_process.json` existed: the command line decides, so its
    # still-running job is not taken for a stranger
    submitter = LocalScheduler(tmp_path, walltime_min=5, persistent_worker=True)
    [job_id] = submitter.submit_array(time.sleep, [(60.0,)])
    try:
        (tmp_path / f"{job_id}_process.json").unlink()
        resumed = LocalScheduler(tmp_path, walltime_min=5)
        assert resumed.states([job_id])[job_id].phase == "running"
        resumed.cancel([job_id])
        assert "killed by signal 9" in _wait_ended(resumed, job_id).detail
    finally:
        submitter.cancel([job_id])
        submitter.close()


def test_a_job_found_by_its_tag_is_recorded_anew_over_an_earlier_jobs_record(tmp_path):
    # a controller killed between starting a job and recording it leaves an earlier job's
    # record of that pid; the resumed controller finds the job by its tag (its environment):
    # that proves the process, so the record is rewritten and the job reads RUNNING
    submitter = LocalScheduler(tmp_path, walltime_min=5)
    [job_id] = submitter.submit_array(time.sleep, [(60.0,)], tag="t2a1")
    try:
        record = tmp_path / f"{job_id}_process.json"
        own = json.loads(record.read_text())
        record.write_text(json.dumps({**own, "start_ticks": own["start_ticks"] - 1000}))
        resumed = LocalScheduler(tmp_path, walltime_min=5)
        assert resumed.find_tagged("t2a1") == {0: job_id}
        assert json.loads(record.read_text()) == own
        assert resumed.states([job_id])[job_id] == SchedulerState("running", "RUNNING")
    finally:
        submitter.cancel([job_id])


def test_a_job_whose_process_record_cannot_be_written_is_never_run(tmp_path, monkeypatch):
    """The server forks first and records the child after (its start time is the record): a
    failure to write the record (a full disk) must leave no job running untracked. Before the
    gate the child ran its job anyway, and the controller, told the submission failed, would
    submit the trial again."""
    import errno
    import operator

    from submitit.core.utils import DelayedSubmission

    import hpc.machine.scheduler.fork_server as fork_server

    pickle_path = tmp_path / "request.pkl"
    DelayedSubmission(operator.add, 1, 2).dump(pickle_path)

    def full_disk(folder, pid):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fork_server, "write_identity", full_disk)
    server = fork_server.ForkServer(tmp_path)
    request = {"pickle": str(pickle_path), "timeout_s": 60, "mem_bytes": None, "label": "t7"}
    answer = server._answer(json.dumps(request).encode())
    time.sleep(1.5)   # time enough for a child that ran on to take its pickle and finish
    assert pickle_path.exists(), "the job ran: its pickle was taken"
    assert not list(tmp_path.glob("*_result.pkl"))
    assert "No space left on device" in answer.get("error", ""), answer
    assert "nothing was started" in answer["error"]
    pid = int(re.search(r"job process (\d+)", answer["error"]).group(1))
    assert server.children == {}
    assert not list(tmp_path.glob(f"{pid}_*")), sorted(p.name for p in tmp_path.iterdir())
    assert not Path(f"/proc/{pid}").exists() or _is_other_process(pid)


def _is_other_process(pid: int) -> bool:
    """Whether /proc/pid is a process other than a zombie child of this test's process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return not (fields[0] == "Z" and int(fields[1]) == os.getpid())


@needs_last_pid
@pytest.mark.parametrize("forked", [False, True], ids=["submitit", "forked"])
def test_a_refusal_part_way_through_an_array_keeps_the_jobs_it_started(tmp_path, forked):
    """A local array starts job by job: when the server refuses its second job (here the job's
    process record cannot be written: a directory sits on its path), the first one is running.
    Before, the whole array was recorded as refused, so the first trial was failed while its
    job ran on, and it would have been submitted again."""
    from hpc.machine.scheduler.base import identity_path

    executor = Executor("local", tmp_path, walltime_min=5, persistent_worker=forked)
    [warm] = executor.submit_array(os.getpid, [()])   # a server is up: its start forks too
    assert _wait(executor, [warm], timeout_s=120)[warm].state == "finished"
    handed_on = {warm}
    for _ in range(20):   # another process may take a chosen pid first: then try again
        # the first job on target - 1; the second a few pids on (a submitit start takes
        # three here: the job and two short-lived helpers), where every record is blocked
        target = int(LAST_PID.read_text()) + 200
        while any(Path(f"/proc/{p}").exists() for p in range(target - 1, target + 6)):
            target += 8
        blockers = [identity_path(tmp_path, target + k) for k in range(6)]
        for blocker in blockers:
            blocker.mkdir()
        LAST_PID.write_text(str(target - 2))
        ids = executor.submit_array(os.getpid, [(), ()])
        for blocker in blockers:
            blocker.rmdir()
        started = [i for i in ids if i.isdigit()]
        handed_on.update(started)
        _wait(executor, started, timeout_s=120)
        time.sleep(1.0)   # a job started but not handed on has finished by now too
        ran = {path.name.split("_")[0] for path in tmp_path.glob("*_result.pkl")}
        assert ran <= handed_on, f"jobs {sorted(ran - handed_on)} ran, recorded as refused"
        if ids[0] == str(target - 1) and not ids[1].isdigit():
            break   # the first job started, the second refused: the case to check
    else:
        pytest.skip("the chosen pids were taken by other processes 20 times")
    statuses = executor.poll(ids)
    assert statuses[ids[0]].state == "finished", statuses
    outcome = executor.outcome(ids[0])   # the job ran and its result is handed on
    assert outcome.ok and isinstance(outcome.value, int), outcome
    if forked:   # a forked job is its own process (submitit's runs its task in a child)
        assert outcome.value == int(ids[0])
    assert statuses[ids[1]].state == "failed", statuses
    assert "process record could not be written" in statuses[ids[1]].detail
    assert ("nothing was started" if forked else "stopped as it started") in (
        statuses[ids[1]].detail)
    refused_pid = int(re.search(r"job process (\d+)", statuses[ids[1]].detail).group(1))
    assert not Path(f"/proc/{refused_pid}").exists()   # the refused job's process is gone
    executor.close()
