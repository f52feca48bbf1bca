"""Joint prefill/decode placement on disaggregated pools, shared by the profile-aware policies.

On a disaggregated layout a call runs in two phases: its prompt is prefilled
(and the first token produced) on a ``role="prefill"`` replica, the KV is
shipped to a ``role="decode"`` replica, which generates the remaining tokens.
A route names both. Given a policy's cost of each side on each replica, the
joint cost of the pair ``(p, d)`` is::

    cost(p, d) = cost_prefill(p) + transfer(p, d) + cost_decode(d)
    transfer(p, d) = input_tokens x kv_bytes_per_token(d) / min(link(p), link(d))

The pair minimising it is found with ``|P| + |D|`` side estimates and
``|P| x |D|`` additions (ties: replica ids), so policies score each side once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from runtime.policies.base import CallView, ReplicaView, Route


def prefill_side(call: CallView) -> CallView:
    """The prefill phase of ``call``: its prompt and a single output token."""
    return replace(call, output_tokens=1)


def decode_side(call: CallView) -> CallView:
    """The decode phase of ``call``: no prompt left to prefill (its KV arrives by transfer)."""
    return replace(call, input_tokens=0, prefix_tokens=0, prefix_key=None)


def transfer_s(call: CallView, p: ReplicaView, d: ReplicaView) -> float:
    """Seconds to ship the prompt's KV from ``p`` to ``d`` (0 when neither reports a link)."""
    bw = min(p.link_bytes_per_s, d.link_bytes_per_s)
    return call.input_tokens * d.kv_bytes_per_token / bw if bw > 0 else 0.0


def is_disaggregated(candidates: Sequence[ReplicaView]) -> bool:
    """Whether ``candidates`` hold prefill-role replicas (the call must be split)."""
    return any(r.role == "prefill" for r in candidates)


def best_pair(call: CallView, candidates: Sequence[ReplicaView],
              prefill_cost: Callable[[CallView, ReplicaView], float],
              decode_cost: Callable[[CallView, ReplicaView], float]) -> tuple[float, Route] | None:
    """The ``(cost, Route)`` of the cheapest prefill/decode pair among ``candidates`` (module
    docstring), or None when either role is missing. ``prefill_cost`` is called with
    :func:`prefill_side` of the call, ``decode_cost`` with :func:`decode_side`."""
    prefill = [r for r in candidates if r.role == "prefill"]
    decode = [r for r in candidates if r.role == "decode"]
    if not prefill or not decode:
        return None
    pre_call, dec_call = prefill_side(call), decode_side(call)
    pre = [(prefill_cost(pre_call, p), p) for p in prefill]
    dec = [(decode_cost(dec_call, d), d) for d in decode]
    best: tuple[float, Route] | None = None
    for pc, p in pre:
        for dc, d in dec:
            cost = pc + transfer_s(call, p, d) + dc
            if best is None or cost < best[0] or (
                    cost == best[0] and (p.replica_id, d.replica_id) < (best[1].replica_id,
                                                                         best[1].decode_replica_id or "")):
                best = (cost, Route(p.replica_id, d.replica_id))
    return best


def route_each_side(call: CallView, candidates: Sequence[ReplicaView],
                    pick: Callable[[CallView, Sequence[ReplicaView]], ReplicaView]) -> Route:
    """For a policy without a joint rule: its own single-replica rule ``pick`` chooses the prefill
    replica for :func:`prefill_side` among the prefill replicas, and the decode replica for
    :func:`decode_side` among the decode replicas (as a router in front of separately deployed
    prefill and decode instances would)."""
    prefill = [r for r in candidates if r.role == "prefill"]
    decode = [r for r in candidates if r.role == "decode"]
    p = pick(prefill_side(call), prefill)
    return Route(p.replica_id, pick(decode_side(call), decode).replica_id if decode else None)
