"""The suite's CPU meter (tests/benchmarks/suite_cpu.py) counts what the kernel says a tagged
process spent, also for a process that is not the meter's child, and only since the test began
for a process that was already running."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent / "benchmarks" / "suite_cpu.py"
SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _meter():
    spec = importlib.util.spec_from_file_location("suite_cpu_under_test", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _own_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_tagged_grandchild_is_counted_and_an_older_process_only_since_the_start(tmp_path):
    meter = _meter()
    tag = f"SUITE_CPU_TEST_TAG_{os.getpid()}"
    env = dict(os.environ, **{tag: "1"})
    # an older tagged process: it spins 0.4 CPU-s, then sleeps (alive, spending nothing)
    older = subprocess.Popen([sys.executable, "-c", SPIN.format(s=0.4) + "time.sleep(60)"],
                             env=env)
    try:
        deadline = time.monotonic() + 60
        while _own_cpu_s(older.pid) < 0.4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        tracker = meter.DescendantCpu(f"{tag}=1".encode(), os.getpid())
        tracker.start()
        # a grandchild started through a shell that does not wait for it (detached)
        marker = tmp_path / "spun"
        grandchild = (SPIN.format(s=0.5) + f"open({str(marker)!r}, 'w').write('1')\n"
                      "time.sleep(2)\n")
        subprocess.run(["sh", "-c", f'{sys.executable} -c "$0" &', grandchild], env=env,
                       check=True)
        while not marker.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        counted = tracker.since_start_s()
    finally:
        older.kill()
        older.wait()
    # the grandchild's 0.5 CPU-s (plus its interpreter start-up), none of the older one's 0.4
    assert 0.5 <= counted < 0.5 + 0.4
