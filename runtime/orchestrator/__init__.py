"""The workflow-aware orchestrator (asyncio): runs walk the call graph on per-stage pools.

Entry points: :class:`Orchestrator` (start/stop, submit/run/cancel, events,
external chat calls, hot-swapping versions, metrics) and
:func:`engine_factory` (engines for a backend). The parts:

* :mod:`.graph` — the IR's execution semantics and the policies' estimates;
* :mod:`.pools` — slots, bounded policy-keyed queues, routing, borrowing, failover;
* :mod:`.executor` — the walker and the LLM/SQL/tool/fan-out nodes;
* :mod:`.runs`, :mod:`.results` — run state, result shapes, records, events;
* :mod:`.versions` — deployed versions and the resources they share;
* :mod:`.templates` — sandboxed jinja2 prompts;
* :mod:`.simulated` — responses that make simulated runs follow the plan's branch probabilities;
* :mod:`.metrics` — counters, histograms, Prometheus text.
"""

from runtime.orchestrator.engines import EngineSetupError, engine_factory
from runtime.orchestrator.errors import BadRequest, NoHealthyReplica, OrchestratorError, Overloaded, UnknownRun
from runtime.orchestrator.orchestrator import Orchestrator
from runtime.orchestrator.results import CallRecord, RunInfo

__all__ = ["Orchestrator", "engine_factory", "EngineSetupError", "Overloaded", "NoHealthyReplica", "BadRequest",
           "UnknownRun", "OrchestratorError", "RunInfo", "CallRecord"]
