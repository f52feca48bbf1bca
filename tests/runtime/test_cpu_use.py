"""CPU use of the serving path around the engines (runtime/cpu_use.py): a busy child process whose
command line names an engine loop counts as one, another child as a front end, this process as Cortex."""

from __future__ import annotations

import subprocess
import sys
import time

from runtime.cpu_use import CpuUse

# /proc/<pid>/stat counts CPU in clock ticks (10 ms), sampled: a child that spun 0.3 s by its own
# precise clock can read a tick or two less there (0.2999... failed a run), hence TICKS of slack.
TICKS = 0.03
BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\ntime.sleep(5)\n"


def test_cpu_seconds_are_split_into_engine_loops_front_ends_and_cortex() -> None:
    use = CpuUse().start()
    loop = subprocess.Popen([sys.executable, "-c", BUSY.format(s=0.6) + "# EngineCore_0"])
    front = subprocess.Popen([sys.executable, "-c", BUSY.format(s=0.3)])
    try:
        t = time.process_time()
        while time.process_time() - t < 0.2:  # this process: Cortex's share
            pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until both children have done their CPU work
            time.sleep(0.2)
            got = use.read()
            if got.get(loop.pid, 0) >= 0.6 - TICKS and got.get(front.pid, 0) >= 0.3 - TICKS:
                break
        share = use.stop()
    finally:
        loop.kill()
        front.kill()
    cpu = share.as_dict()
    wall = share.wall_s
    assert 0.6 - TICKS <= share.engine_loops * wall < 1.5
    assert 0.3 - TICKS <= share.engine_front_ends * wall < 1.2
    assert 0.2 - TICKS <= share.cortex * wall
    assert cpu["cores"] >= 1 and "engine loops" in share.line()


def test_an_in_process_engine_is_named_in_cortexs_share() -> None:
    """With a ``vllm-inproc`` engine the model's compute is in this process: the report must say so,
    not credit it all to the orchestrator."""
    share = CpuUse(inprocess_engines=1).start().stop()
    assert share.inprocess_engines == 1 and share.as_dict()["inprocess_engines"] == 1
    assert "Cortex's own process with its 1 in-process engine " in share.line()
    assert "in-process" not in CpuUse().start().stop().line()
