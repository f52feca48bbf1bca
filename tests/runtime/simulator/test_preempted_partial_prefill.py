"""A call preempted after it joined the batch, then re-admitted as a partial prefill, must not be
"finished" by its stale finish step.

Found by ``benchmarks/isolation_map.py --kv 12000`` (cell long/12000/pd at load 0.85, stage ``a``
on one replica): the preempted call kept its old ``finish_step``; re-admitted as a chunked
prefill it was RUNNING again without being in the batch, and when the engine's step reached that
old finish step the engine released it from a batch it was not in (``KeyError``). A preemption
now invalidates the finish step (``LLMEngine._preempt``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks import isolation_map  # noqa: E402
from benchmarks.sim_common import simulate  # noqa: E402


def test_a_preempted_call_readmitted_as_a_partial_prefill_runs_to_its_end() -> None:
    setup, layout = isolation_map.cell_setup("long", "12000", "pd", 8)
    one_replica_for_a = isolation_map.isolate(layout, 1)  # stage a's 3,000-token prompts on one 12k-KV replica
    res = simulate(setup, "cortex", 0.85, 1.75, 500, isolation_map.TUNING_SEED, layout=one_replica_for_a)
    assert sum(e.preemptions for e in res.engines) > 0  # the path under test was taken
    assert len(res.status) == 500 and set(np.unique(res.status)) <= {"done", "rejected"}
    assert np.all(np.isfinite(res.end[res.status == "done"]))
