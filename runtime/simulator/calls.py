"""The simulator's per-call and per-run state objects (plain slotted classes, for speed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.simulator.runs import Run

# Call states.
CREATED, QUEUED, RUNNING, TRANSFER, DONE, CANCELLED = range(6)
OVERLONG = 6
FULL = "full"
"""``Call.phase`` of a call that runs both phases on one replica (else "prefill" or "decode", on a
disaggregated pair). Tests of the phase check identity with this object first (``phase is not FULL
and phase == ...``): Cython's compiled ``==`` on two different strings is an ordering comparison
(``PyUnicode_Compare``), the identity test answers the common case at once, with the same result."""
"""Created with a prompt longer than the shortest context of its stage's model options allows
(less ``max_tokens``): ``Simulator.dispatch`` checks it on the model it is dispatched on."""


class Call:
    """One execution of a stage. Fields below ``# scheduling`` belong to the executor."""

    __slots__ = (
        "run", "key", "stage", "kind", "model", "input_tokens", "output_tokens", "prefix_key",
        "prefix_tokens", "service_s", "standalone_s", "expected_s", "remaining_cp_s", "remaining_std_s",
        "group", "attempt", "cp_service_s", "hedge_peers", "edge_u",
        # scheduling
        "prio", "seq", "state", "replica", "decode_replica", "t_enqueue", "t_start", "t_end",
        "admit_step", "finish_step", "remaining", "own_tokens", "cached_prefix", "phase", "view", "ctx",
        "chunk_left",
    )

    def __init__(self, run: "Run", key: Any, stage: str, kind: str, model: str | None,
                 input_tokens: int = 0, output_tokens: int = 0, prefix_key: str | None = None,
                 prefix_tokens: int = 0, service_s: float = 0.0, standalone_s: float = 0.0,
                 expected_s: float = 0.0, remaining_cp_s: float = 0.0, remaining_std_s: float = 0.0,
                 group: Any = None, attempt: int = 0, cp_service_s: float = 0.0):
        self._init(run, key, stage, kind, model, input_tokens, output_tokens, prefix_key, prefix_tokens, service_s,
                   standalone_s, expected_s, remaining_cp_s, remaining_std_s, group, attempt, cp_service_s)

    def _init(self, run: "Run", key: Any, stage: str, kind: str, model: str | None, input_tokens: int,
              output_tokens: int, prefix_key: str | None, prefix_tokens: int, service_s: float, standalone_s: float,
              expected_s: float, remaining_cp_s: float, remaining_std_s: float, group: Any, attempt: int,
              cp_service_s: float) -> None:
        """Set every field: ``__init__``'s body, which :func:`new_call` runs on a bare object."""
        self.run = run
        self.key = key
        self.stage = stage
        self.kind = kind
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.prefix_key = prefix_key
        self.prefix_tokens = prefix_tokens
        self.service_s = service_s
        self.standalone_s = standalone_s
        self.expected_s = expected_s
        self.remaining_cp_s = remaining_cp_s
        self.remaining_std_s = remaining_std_s
        self.group = group
        self.attempt = attempt
        self.cp_service_s = cp_service_s
        self.hedge_peers: list[Call] | None = None
        self.prio: tuple = ()
        self.seq = 0
        self.state = CREATED
        self.replica = None
        self.decode_replica = None
        self.t_enqueue = 0.0
        self.t_start = -1.0
        self.t_end = -1.0
        self.admit_step = 0
        self.finish_step = 0
        self.remaining = output_tokens
        self.own_tokens = 0
        self.cached_prefix = False
        self.phase = FULL
        self.view = None
        self.ctx = input_tokens
        self.chunk_left = 0  # uncached prompt tokens still to prefill while partially prefilled (chunked)
        self.edge_u = None  # the run's scripted draw of the edge after this call, if the run gave it

    def __lt__(self, other: "Call") -> bool:  # heap tie-break only; keys carry (prio, seq)
        return self.seq < other.seq


def new_call(run: "Run", key: Any, stage: str, kind: str, model: str | None, input_tokens: int, output_tokens: int,
             prefix_key: str | None, prefix_tokens: int, service_s: float, standalone_s: float, expected_s: float,
             remaining_cp_s: float, remaining_std_s: float, group: Any, attempt: int, cp_service_s: float) -> Call:
    """``Call(...)`` with every argument given (the run walker makes each call so). Compiled
    (calls.pxd), a C call that allocates the struct and fills its fields, where the class call
    builds an argument tuple that ``__init__`` then parses."""
    c = Call.__new__(Call)
    c._init(run, key, stage, kind, model, input_tokens, output_tokens, prefix_key, prefix_tokens, service_s,
            standalone_s, expected_s, remaining_cp_s, remaining_std_s, group, attempt, cp_service_s)
    return c
