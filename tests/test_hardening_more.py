"""Issue 20, second pass: the local executor's memory limit, a dead Dask scheduler, literal text
in the report, checks at load (optimizer options, warm starts, sbatch options), status on a
damaged folder, an atomic frozen config, and malformed campaign files through the real CLI.

Each test failed on the code before its fix (the commit messages say how); faults are real:
real local jobs that allocate memory or are SIGKILLed, a real closed port, a real full tmpfs.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_config import _invalid
from test_hardening import campaign_copy, cli, finished_campaign, full_filesystem, tiny_config
from test_persistent_worker import _kill_tree, _other_campaigns_job, _start_on_pid, needs_last_pid

from hpc.campaign.config import ConfigError, dump_campaign, load_campaign, parse_campaign
from hpc.machine.executor import Executor

__all__ = ["campaign_copy", "finished_campaign"]  # fixtures shared with test_hardening

GIB = 1024**3


def _wait(executor: Executor, job_id: str, limit_s: float = 120.0):
    deadline = time.monotonic() + limit_s
    while True:
        status = executor.poll([job_id])[job_id]
        if status.state in ("finished", "failed"):
            return status
        assert time.monotonic() < deadline, f"job {job_id} still {status} after {limit_s} s"
        time.sleep(0.2)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# ---- the local executor enforces mem_gb and says how a job died ------------------------------

def test_local_job_over_mem_gb_is_killed_with_the_measured_memory(tmp_path):
    """A job whose child holds 600 MiB under mem_gb = 0.25 is stopped (not left to sleep 60 s),
    the reason names the limit and the memory measured, and no process of it is left behind."""
    marker = f"hog-{uuid.uuid4().hex}"
    executor = Executor("local", tmp_path / "jobs", mem_gb=0.25, result_grace_s=0.5)
    script = f"x = b'x' * (600 * 2**20); import time; time.sleep(60)  # {marker}"
    start = time.monotonic()
    job_id = executor.submit(subprocess.check_call, [sys.executable, "-c", script])
    status = _wait(executor, job_id, limit_s=45)
    assert status.state == "failed", status
    assert time.monotonic() - start < 45
    assert "memory guard" in status.detail and "resources.mem_gb = 0.25 GiB" in status.detail
    record = json.loads((tmp_path / "jobs" / f"{job_id}_memory.json").read_text())
    assert record["killed_by_guard"] and record["signal"] == 9
    assert 0.25 * GIB < record["pss_bytes_at_kill"] < 700 * 2**20   # what it held, measured
    time.sleep(0.5)
    assert _processes_with(marker) == []   # the tree was killed, the child too


def test_a_job_killed_by_signal_9_is_recorded_with_its_memory_not_as_died(tmp_path):
    """SIGKILL from outside (as the kernel's OOM killer sends it): the reason says signal 9,
    the peak RSS measured by wait4 and whether the OOM killer fired, not 'its process died'."""
    executor = Executor("local", tmp_path / "jobs", mem_gb=4.0, result_grace_s=0.5)
    job_id = executor.submit(subprocess.check_call, ["sh", "-c", "kill -9 $PPID"])
    status = _wait(executor, job_id)
    assert status.state == "failed"
    assert "killed by signal 9 (out of memory? peak RSS" in status.detail, status.detail
    assert "of resources.mem_gb = 4 GiB" in status.detail
    assert "its process died" not in status.detail
    record = json.loads((tmp_path / "jobs" / f"{job_id}_memory.json").read_text())
    assert record["signal"] == 9 and not record["killed_by_guard"]
    # a python task imports submitit and more: its peak is tens of MiB, never 0 or > the limit
    assert 10 * 2**20 < record["peak_rss_bytes"] < 4 * GIB


def test_the_guards_two_ways_to_find_a_process_tree_agree():
    """/proc/<pid>/task/<tid>/children and the /proc scan fallback give the same tree."""
    from hpc.machine.scheduler.memory_guard import _children_by_scan, process_tree

    shell = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(shell.pid)) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        by_parent = _children_by_scan()
        scanned = [shell.pid] + by_parent.get(shell.pid, [])
        assert sorted(process_tree(shell.pid)) == sorted(scanned)
        assert len(scanned) == 3
    finally:
        for pid in process_tree(shell.pid)[::-1]:
            os.kill(pid, 9)
        shell.wait()


def test_a_job_within_mem_gb_runs_and_returns_its_value(tmp_path):
    executor = Executor("local", tmp_path / "jobs", mem_gb=1.0, result_grace_s=0.5)
    script = "x = b'x' * (100 * 2**20)"
    job_id = executor.submit(subprocess.check_call, [sys.executable, "-c", script])
    assert _wait(executor, job_id).state == "finished"
    assert executor.outcome(job_id).value == 0


# ---- a dead Dask scheduler is noticed at once ------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dead_dask_scheduler_fails_fast_so_the_job_falls_back():
    """Before: each orphaned job waited the Client's 60 s connect timeout."""
    from jobs.simulate import _on_dask

    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(OSError) as raised:   # the evaluation task's fallback catches OSError
        _on_dask(address, {}, {}, [])
    assert time.monotonic() - start < 10
    assert address in str(raised.value)


def test_an_orphaned_evaluation_solves_its_sweeps_itself_without_waiting(tmp_path):
    """The whole job, as an orphan of a killed controller runs it: the same objective as an
    evaluation without Dask, and not 60 s later."""
    from hpc.campaign.controller import preflight
    from hpc.machine.evaluation_task import EvaluationTask

    spec = preflight(tiny_config())
    params = {"am_wt_frac": 0.9, "porosity": 0.35, "binder_adhesion": 0.5,
              "mass_loading_mg_cm2": 15.0}
    start = time.monotonic()
    alone = EvaluationTask()(str(tmp_path / "a"), 0, params, spec, 1, None)
    alone_s = time.monotonic() - start
    start = time.monotonic()
    orphan = EvaluationTask()(str(tmp_path / "b"), 0, params, spec, 1,
                              f"tcp://127.0.0.1:{_closed_port()}")
    orphan_s = time.monotonic() - start
    assert orphan["objective"] == alone["objective"]   # same seed, same design, same number
    assert orphan_s < alone_s + 15, (orphan_s, alone_s)


def test_live_dask_scheduler_passes_the_probe():
    from distributed import LocalCluster

    from jobs.simulate import probe_scheduler

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        probe_scheduler(cluster.scheduler_address)


# ---- the report draws text literally ---------------------------------------------------------

def test_report_draws_a_mathtext_name_literally(campaign_copy):
    from hpc.analysis.report import write_report

    frozen = campaign_copy / "campaign.toml"
    frozen.write_text(frozen.read_text().replace('name = "tiny-hardening"',
                                                 'name = "$\\\\frac{$"'))
    assert "tiny-hardening" not in frozen.read_text()
    path = write_report(campaign_copy)
    assert (campaign_copy / "report" / "trace.png").read_bytes()[:4] == b"\x89PNG"
    assert "$\\frac{$" in Path(path).read_text()


# ---- checked at load, before any folder exists -----------------------------------------------

def _write_toml(path: Path, **sections) -> Path:
    data = tiny_config().to_toml_dict()
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.mark.parametrize("options, named", [
    ({"num_restarts": 0}, "num_restarts"),
    ({"failure_radius": [1]}, "failure_radius"),
    ({"min_feasibility_probability": 2.0}, "min_feasibility_probability"),
])
def test_bad_optimizer_option_values_are_refused_before_the_folder(tmp_path, monkeypatch,
                                                                   options, named):
    monkeypatch.chdir(tmp_path)
    toml = _write_toml(tmp_path / "c.toml",
                       optimizer={"backend": "botorch", "options": options})
    result = cli("run", str(toml), "--dir", str(tmp_path / "target"))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "optimizer.options" in result.output and named in result.output
    assert not (tmp_path / "target").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_resume_with_a_bad_option_in_the_frozen_config_is_a_usage_error(campaign_copy):
    frozen = campaign_copy / "campaign.toml"
    import tomllib

    data = tomllib.loads(frozen.read_text())
    data["optimizer"]["options"] = {"failure_radius": -1.0}
    frozen.write_text(tomli_w.dumps(data))
    result = cli("resume", str(campaign_copy), "--quiet", "--no-report")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "optimizer.options" in result.output and "failure_radius" in result.output


def test_missing_or_damaged_warm_start_folder_is_refused_at_load(campaign_copy, tmp_path):
    base = tiny_config().to_toml_dict()
    with pytest.raises(ConfigError, match=r"warm_start\.campaigns\[0\].*not a campaign folder"):
        parse_campaign({**base, "warm_start": {"campaigns": [str(tmp_path / "nowhere")]}})
    journal = campaign_copy / "journal.jsonl"
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join([lines[0], b"\xff\xfe not json", *lines[1:]]))
    with pytest.raises(ConfigError, match=r"warm_start\.campaigns\[0\].*journal is damaged"):
        parse_campaign({**base, "warm_start": {"campaigns": [str(campaign_copy)]}})


def test_a_valid_warm_start_folder_still_loads(finished_campaign):
    base = tiny_config().to_toml_dict()
    config = parse_campaign({**base, "warm_start": {"campaigns": [str(finished_campaign)]}})
    assert config.warm_start.campaigns == [str(finished_campaign)]


def test_sbatch_options_that_submitit_owns_are_refused_with_the_list():
    base = tiny_config().to_toml_dict()
    options = {"output": "/elsewhere/%j.out", "wrap": "id", "chdir": "/", "qos": "normal"}
    with pytest.raises(ConfigError) as raised:
        parse_campaign({**base, "resources": {**base["resources"], "sbatch_options": options}})
    message = str(raised.value)
    assert "resources.sbatch_options" in message and "refused: chdir, output, wrap" in message
    for key in ("error", "array"):
        with pytest.raises(ConfigError, match=f"refused: {key}"):
            parse_campaign({**base, "resources": {**base["resources"],
                                                  "sbatch_options": {key: "x"}}})
    fine = parse_campaign({**base, "resources": {**base["resources"],
                                                 "sbatch_options": {"qos": "normal"}}})
    assert fine.resources.sbatch_options == {"qos": "normal"}


# ---- status on a damaged folder ---------------------------------------------------------------

def test_status_on_a_damaged_journal_is_a_usage_error(campaign_copy):
    journal = campaign_copy / "journal.jsonl"
    journal.write_bytes(b"\x00\x01 binary\n" + journal.read_bytes())
    result = cli("status", str(campaign_copy))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "journal.jsonl: line 1 is damaged" in result.output
    journal.unlink()
    journal.mkdir()   # a folder where the journal belongs
    result = cli("status", str(campaign_copy))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.exception
    assert "journal.jsonl" in result.output


def test_status_refuses_a_journal_linked_out_of_the_folder(campaign_copy, tmp_path):
    outside = tmp_path / "elsewhere.jsonl"
    shutil.move(campaign_copy / "journal.jsonl", outside)
    (campaign_copy / "journal.jsonl").symlink_to(outside)
    result = cli("status", str(campaign_copy))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "journal.jsonl" in result.output


def test_status_says_how_a_gone_local_job_ended(campaign_copy):
    """A controller killed with a job in flight: `status` shows the memory guard's record of
    that job (killed by signal 9, its peak RSS), not only GONE."""
    import tomllib

    from hpc.campaign.journal import Journal

    frozen = campaign_copy / "campaign.toml"
    data = tomllib.loads(frozen.read_text())
    data["resources"]["executor"] = "local"   # the finished copy ran in-process (debug)
    frozen.write_text(tomli_w.dumps(data))
    executor = Executor("local", campaign_copy / "jobs", mem_gb=4.0, result_grace_s=0.5)
    job_id = executor.submit(subprocess.check_call, ["sh", "-c", "kill -9 $PPID"])
    assert _wait(executor, job_id).state == "failed"
    journal = Journal(campaign_copy)
    journal.append("proposed", trial_id=2, params={"am_wt_frac": 0.9, "porosity": 0.3})
    journal.append("submitted", trial_id=2, attempt=1, job_id=job_id)
    journal.close()
    result = cli("status", str(campaign_copy), "--json")
    assert result.exit_code == 0, result.output
    running = json.loads(result.output)["running"]
    assert [r["job_id"] for r in running] == [job_id]
    assert running[0]["state"].startswith("GONE (killed by signal 9 (out of memory? peak RSS")


@needs_last_pid
def test_status_does_not_show_a_job_whose_pid_went_to_another_process_as_running(
        campaign_copy):
    """The job died (no result) while no controller ran, and another campaign's submitit job
    got its pid: `status` once showed that stranger as the job RUNNING."""
    import tomllib

    from hpc.campaign.journal import Journal
    from hpc.machine.scheduler.local import PID_TAKEN

    frozen = campaign_copy / "campaign.toml"
    data = tomllib.loads(frozen.read_text())
    data["resources"]["executor"] = "local"   # the finished copy ran in-process (debug)
    frozen.write_text(tomli_w.dumps(data))
    executor = Executor("local", campaign_copy / "jobs", mem_gb=None, result_grace_s=0.0)
    job_id = executor.submit(os._exit, 3)
    assert _wait(executor, job_id).state == "failed"
    journal = Journal(campaign_copy)
    journal.append("proposed", trial_id=2, params={"am_wt_frac": 0.9, "porosity": 0.3})
    journal.append("submitted", trial_id=2, attempt=1, job_id=job_id)
    journal.close()
    held: list = []
    stranger = _start_on_pid(int(job_id), _other_campaigns_job(campaign_copy.parent / "o", held))
    if stranger is None:
        pytest.skip("the pid was taken by other processes 20 times")
    try:
        result = cli("status", str(campaign_copy), "--json")
    finally:
        _kill_tree(stranger.pid)
        stranger.wait()
    assert result.exit_code == 0, result.output
    running = json.loads(result.output)["running"]
    assert [(r["job_id"], r["state"]) for r in running] == [(job_id, f"GONE ({PID_TAKEN})")]


# ---- the frozen config is written atomically ---------------------------------------------------

def test_dump_campaign_keeps_the_old_file_whole_when_the_disk_fills(tmp_path):
    folder = tmp_path / "disk"
    with full_filesystem(folder, size_kib=256) as fill:
        path = folder / "campaign.toml"
        dump_campaign(tiny_config(), path)
        before = path.read_bytes()
        assert load_campaign(path).name == "tiny-hardening"
        fill()
        with pytest.raises(OSError) as raised:
            dump_campaign(tiny_config(name="x" * 60), path)
        assert raised.value.errno == errno.ENOSPC
        assert path.read_bytes() == before   # before: truncated to 0 bytes by write_text
        assert [p.name for p in folder.iterdir() if p.name != ".filler"] == ["campaign.toml"]


# ---- malformed campaign files through the real CLI: a named error, nothing written ------------

_RAW = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"[space\n", b"name = \n", b"\xff\xfe[optimizer]", b"space = 1\n",
                     b"[[space]]\n", b"name = \"a\"\nname = \"b\"\n"]),
)


@st.composite
def _late(draw):
    """Files the schema accepts but that failed only after the folder was made (before this
    pass): bad optimizer option values, a warm start that is no campaign, refused sbatch keys."""
    data = tiny_config().to_toml_dict()
    kind = draw(st.sampled_from(["options", "warm_start", "sbatch"]))
    if kind == "options":
        data["optimizer"]["backend"] = draw(st.sampled_from(["botorch", "sobol", "random"]))
        key = draw(st.sampled_from(["failure_radius", "duplicate_radius"]))
        data["optimizer"]["options"] = {key: draw(st.one_of(
            st.floats(max_value=-1e-9), st.text(max_size=5).filter(_not_a_float),
            st.lists(st.integers(), min_size=1, max_size=2)))}
        return data, "optimizer", "options"
    if kind == "warm_start":
        data["warm_start"] = {"campaigns": [draw(st.sampled_from(
            ["nowhere", "../missing-campaign", "campaign.toml", "."]))]}
        return data, "warm_start", "campaigns"
    refused = draw(st.lists(st.sampled_from(["output", "error", "wrap", "chdir", "array"]),
                            min_size=1, max_size=3, unique=True))
    data["resources"]["sbatch_options"] = {key: "x" for key in refused}
    return data, "resources", "sbatch_options"


def _not_a_float(text: str) -> bool:
    try:
        return not float(text) >= 0
    except ValueError:
        return True


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.one_of(_invalid().map(lambda c: ("schema", c)), _late().map(lambda c: ("schema", c)),
                     _RAW.map(lambda b: ("raw", b))))
def test_cli_run_on_malformed_files_names_the_field_and_writes_nothing(tmp_path, monkeypatch,
                                                                        case):
    kind, payload = case
    work = tmp_path / uuid.uuid4().hex
    work.mkdir()
    monkeypatch.chdir(work)
    toml = work / "campaign.toml"
    if kind == "schema":
        data, section, key = payload
        try:
            text = tomli_w.dumps(data)
        except (TypeError, ValueError):   # not expressible in TOML (e.g. a NUL in a key)
            assume(False)
        toml.write_text(text, encoding="utf-8")
    else:
        toml.write_bytes(payload)
    before = toml.read_bytes()
    result = cli("run", str(toml), "--dir", str(work / "target"), "--quiet", "--no-report")
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # never a traceback
    assert result.output.startswith("error: ")
    if kind == "schema":
        where = section if key is None else f"{section}.{key}"
        assert where in result.output, result.output
    assert _files_under(work) == {"campaign.toml"}   # no target folder, no runs/, nothing else
    assert toml.read_bytes() == before
    assert not os.path.exists(work / "runs")


#: A Dask scheduler in its own process that stands for a controller's: it takes the cell
#: sweeps' graph, writes `argv[1]` and then never answers (as a controller SIGKILLed at that
#: instant), so the test can kill it while the job waits in `client.gather`.
_HOLDING_SCHEDULER = """
import sys, time
from pathlib import Path
from distributed import LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

class Hold(SchedulerPlugin):
    def update_graph(self, scheduler, *args, **kwargs):
        Path(sys.argv[1]).write_text("graph received")
        time.sleep(3600)

cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                       dashboard_address=":0")
cluster.scheduler.add_plugin(Hold())
print(cluster.scheduler_address, flush=True)
time.sleep(3600)
"""


def test_a_job_whose_dask_scheduler_dies_mid_gather_solves_its_sweeps_itself(tmp_path):
    """The SIGKILL/resume race (tests/test_campaign.py once saw a trial "submitted" twice under
    load): a job waiting for its sweeps when the controller, and with it the Dask scheduler, is
    killed got FutureCancelledError ("scheduler-connection-lost"), which is neither OSError nor
    TimeoutError, so the attempt failed and the resumed controller ran the trial again. The job
    must fall back to solving here, with the objective of an evaluation without Dask."""
    import signal
    import threading

    from hpc.campaign.controller import preflight
    from hpc.machine.evaluation_task import EvaluationTask

    spec = preflight(tiny_config())
    params = {"am_wt_frac": 0.9, "porosity": 0.35, "binder_adhesion": 0.5,
              "mass_loading_mg_cm2": 15.0}
    alone = EvaluationTask()(str(tmp_path / "a"), 0, params, spec, 1, None)
    marker = tmp_path / "graph_received"
    scheduler = subprocess.Popen([sys.executable, "-c", _HOLDING_SCHEDULER, str(marker)],
                                 stdout=subprocess.PIPE, text=True,
                                 env=dict(os.environ, OMP_NUM_THREADS="1"))
    killed = threading.Event()

    def kill_once_the_sweeps_wait() -> None:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker.exists():
            scheduler.send_signal(signal.SIGKILL)
            killed.set()

    try:
        address = scheduler.stdout.readline().strip()
        assert address.startswith("tcp://"), address
        watcher = threading.Thread(target=kill_once_the_sweeps_wait, daemon=True)
        watcher.start()
        orphan = EvaluationTask()(str(tmp_path / "b"), 0, params, spec, 1, address)
        watcher.join(timeout=5)
    finally:
        scheduler.kill()
        scheduler.wait(timeout=30)
    assert killed.is_set(), "the sweeps never reached the scheduler"
    assert orphan["objective"] == alone["objective"]   # same seed, same design, same number
