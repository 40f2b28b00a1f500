"""The test suite's cost in CPU seconds per test: a pytest plugin and its summary.

On a shared, loaded machine a test's wall time says more about the neighbours than about the
test (a 4.3 CPU-s test took 24 s of wall at load 15). This plugin records, per test (setup, call
and teardown together), the CPU seconds of the pytest process and of every process started
under it: its children, the jobs those start, detached ones included (a campaign's persistent
worker, Dask workers, local executor jobs). Descendants are found by an environment variable
the plugin sets, which they inherit, and their CPU is read from /proc (Linux only) every
`SAMPLE_S` seconds and at each test's start and end; a process that ends between two samples
loses at most one interval of its CPU. A process alive before a test (a module's shared worker)
counts only its CPU during the test.

Record a run (one JSON line per test, appended to the file in SUITE_CPU_OUT)::

    SUITE_CPU_OUT=cpu.jsonl PYTHONPATH=.:tests/benchmarks python -m pytest -p suite_cpu -q

then print the costliest tests and the cost per test file (CPU-s, wall-s)::

    python tests/benchmarks/suite_cpu.py cpu.jsonl [--top 30]

Compare files or tests by CPU measured in one run; the wall column is only a cross-check
(wall far above CPU means the test waits: sleeps, polling, a subprocess's timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

#: the environment variable descendants inherit and the plugin looks for in /proc/<pid>/environ
TAG_NAME = "MICROLOOP_SUITE_CPU_TAG"
#: seconds between two reads of the descendants' CPU
SAMPLE_S = 0.25


def _tagged_cpu_s(tag: bytes, skip_pid: int) -> dict[int, float]:
    """CPU seconds (user + system, own, without reaped children) of every live process whose
    environment holds `tag`, by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == skip_pid:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if tag not in handle.read():
                    continue
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while it was read
            continue
        found[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    return found


class DescendantCpu:
    """The CPU of tagged processes since `start()`: new ones from 0, older ones from then."""

    def __init__(self, tag: bytes, skip_pid: int) -> None:
        self.tag, self.skip_pid = tag, skip_pid
        self._lock = threading.Lock()
        self._at_start: dict[int, float] = {}
        self._latest: dict[int, float] = {}

    def sample(self) -> None:
        now = _tagged_cpu_s(self.tag, self.skip_pid)
        with self._lock:
            self._latest.update(now)

    def start(self) -> None:
        now = _tagged_cpu_s(self.tag, self.skip_pid)
        with self._lock:
            self._at_start = dict(now)
            self._latest = dict(now)

    def since_start_s(self) -> float:
        self.sample()
        with self._lock:
            return sum(cpu - self._at_start.get(pid, 0.0) for pid, cpu in self._latest.items())


# ---- the pytest plugin (active when loaded with `-p suite_cpu`) -----------------------------

_TRACKER: DescendantCpu | None = None


def pytest_configure(config) -> None:
    global _TRACKER
    os.environ[TAG_NAME] = f"{os.getpid()}"
    _TRACKER = DescendantCpu(f"{TAG_NAME}={os.getpid()}".encode(), os.getpid())

    def sampler() -> None:
        while True:
            _TRACKER.sample()
            time.sleep(SAMPLE_S)

    threading.Thread(target=sampler, daemon=True, name="suite-cpu-sampler").start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    assert _TRACKER is not None
    _TRACKER.start()
    own0, wall0 = time.process_time(), time.perf_counter()
    yield
    own_s = time.process_time() - own0
    record = {"nodeid": item.nodeid, "own_cpu_s": round(own_s, 3),
              "descendants_cpu_s": round(_TRACKER.since_start_s(), 3),
              "wall_s": round(time.perf_counter() - wall0, 3)}
    with open(os.environ.get("SUITE_CPU_OUT", "suite_cpu.jsonl"), "a") as handle:
        handle.write(json.dumps(record) + "\n")



# ---- the summary -----------------------------------------------------------------------------


def summarise(records: list[dict], top: int) -> str:
    """The `top` costliest tests and every file's total, costliest first, as text."""
    def cpu(r: dict) -> float:
        return r["own_cpu_s"] + r["descendants_cpu_s"]

    lines = [f"{len(records)} tests, {sum(map(cpu, records)):.1f} CPU-s, "
             f"{sum(r['wall_s'] for r in records):.1f} wall-s", "", "costliest tests (CPU-s, wall-s):"]
    for r in sorted(records, key=cpu, reverse=True)[:top]:
        lines.append(f"{cpu(r):8.1f} {r['wall_s']:8.1f}  {r['nodeid']}")
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in records:
        entry = files[r["nodeid"].split("::")[0]]
        entry[0] += cpu(r)
        entry[1] += r["wall_s"]
        entry[2] += 1
    lines += ["", "per file (CPU-s, wall-s, tests):"]
    for name, (cpu_s, wall_s, n) in sorted(files.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{cpu_s:8.1f} {wall_s:8.1f} {n:4d}  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", type=Path, help="the JSON-lines file the plugin wrote")
    parser.add_argument("--top", type=int, default=30, help="how many tests to list")
    args = parser.parse_args()
    records = [json.loads(line) for line in args.records.read_text().splitlines() if line]
    print(summarise(records, args.top))


if __name__ == "__main__":
    main()
