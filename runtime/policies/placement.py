"""Expected-completion-time estimates for dispatch, from the shared latency profiles.

A policy routes a call by asking, for every candidate replica ``r``, what the
call would cost there. With ``r``'s :class:`planner.profiles.LatencyProfile`
(``F, S, K`` = decode fixed / per-sequence / per-KV-token costs, ``c`` = prefill
cost per token), ``b`` running sequences holding ``k`` KV tokens with ``D``
output tokens still to generate, ``q`` waiting calls and ``m`` batch slots
(``max_num_seqs``), a call with ``P`` uncached prompt tokens (its stage prefix
is free where resident), ``O`` output tokens and mean context ``x = in + O/2``:

* **slot wait.** When the call would be the ``j = q + 1 - (m - b) > 0``-th call
  without a slot, it waits for ``j`` running sequences to finish. Remaining
  lengths are taken as uniform on ``[0, 2 D/b]``, so the ``j``-th finish comes
  after ``2 (D/b) j / b`` steps of ``t(b, k) = F + S b + K k``;
* **iteration in progress.** A prefill iteration cannot be cut short, so the
  call joins no earlier than its end (``ReplicaView.busy_until_s``); a decode
  epoch is interrupted at the next step;
* **prefill.** The waiting calls ahead are prefilled in the same admitting
  iterations: ``c (P + P_q)`` (``P_q`` = their prompt tokens), plus the fixed
  cost on an idle replica;
* **decode.** ``O - 1`` steps at the batch the call will join,
  ``b' = min(m, b + q + 1)`` with ``k' = k + (b' - b) x``:
  ``(O - 1) t(b', k')``.

``finish_s`` is the sum. The **marginal slowdown** is what the call adds to the
calls already there: each of the ``b`` running sequences stalls for the call's
prefill (``b c P``), and every step they share with it costs ``S + K x`` more,
over at most ``min(D, b O)`` of their remaining tokens.

Without a profile (an executor that does not know it) the estimate falls back
to ``backlog + expected / speed``, less the prefill a resident prefix saves
(at a reference H100-class cost per token), with no marginal term.
"""

from __future__ import annotations

from runtime.policies.base import CallView, ReplicaView

FALLBACK_PREFILL_S_PER_TOKEN = 25e-6
"""Reference prefill cost per token (H100-class, Llama-3-8B) valuing a resident prefix without a profile."""
FALLBACK_PREFIX_TOKENS = 1024
"""Prefix length assumed when the executor does not report one."""


def uncached_prompt(call: CallView, r: ReplicaView) -> int:
    """Prompt tokens to prefill on ``r``: the stage prefix is free where it is resident."""
    if call.prefix_key is not None and call.prefix_key in r.resident_prefixes:
        return max(call.input_tokens - call.prefix_tokens, 1)
    return call.input_tokens


def estimate(call: CallView, r: ReplicaView) -> tuple[float, float]:
    """``(finish_s, marginal_s)`` of ``call`` on ``r``: seconds from now until the call completes
    there, and the seconds it adds to the calls already running there, summed (module docstring).

    Hot path of every profile-aware router: the profile's formulas are inlined.
    """
    return estimate_for(r, call.input_tokens, call.output_tokens, call.prefix_key, call.prefix_tokens, call.now_s,
                        call.stage_expected_s)


def estimate_for(r: ReplicaView, inp: int, out: int, pkey: str | None, ptoks: int, now: float,
                 expected: float) -> tuple[float, float]:
    """:func:`estimate` of a call given by its fields (input and output tokens, prefix key and
    tokens, the executor's time, expected standalone time): a router scoring one call on many
    replicas reads them once."""
    return estimate_at(r, inp, out, pkey is not None and pkey in r.resident_prefixes, ptoks, now, expected)


def estimate_at(r: ReplicaView, inp: int, out: int, resident: bool, ptoks: int, now: float,
                expected: float) -> tuple[float, float]:
    """:func:`estimate_for` given whether the call's prefix is resident on ``r`` (a router that also
    needs :func:`kv_need_at` tests it once)."""
    # The replica's own terms are computed once per view state (successive calls are scored
    # against a view until it changes; the executor resets ``estimate_cache`` then).
    terms = r.estimate_cache
    if terms is None:
        p = r.profile
        if p is None:
            finish = r.backlog_s + expected / max(r.speed, 1e-9)
            if resident:
                cached = ptoks or min(inp, FALLBACK_PREFIX_TOKENS)
                finish -= FALLBACK_PREFILL_S_PER_TOKEN * cached / max(r.speed, 1e-9)
            return finish, 0.0
        terms = r.estimate_cache = _replica_terms(r, p)
    fill = inp
    if resident:
        fill = inp - ptoks
        if fill < 1:
            fill = 1
    ctx = inp + out / 2.0
    finish = terms.c * (fill + terms.queued)
    if terms.has_wait:
        finish += terms.wait
    busy_until = r.busy_until_s
    if busy_until > now:  # joins only after the prefill iteration in progress
        finish += busy_until - now
    k_ = terms.k_
    if out > 1:
        kv_join = int(terms.kv + terms.grow * ctx)  # KV tokens once it joins (a C integer in the compiled build)
        finish += (out - 1) * (terms.base + k_ * kv_join)
    b = terms.b
    if not b:
        return finish, 0.0
    pending = terms.pending
    shared = pending if pending < b * out else b * out
    return finish, terms.bc * fill + shared * (terms.s_ + k_ * ctx)


def prefill_monotone(r: ReplicaView) -> bool:
    """Whether :func:`estimate_at` on ``r`` cannot decrease as the prompt to prefill grows, so that
    scoring a call as if its prefix were resident on ``r`` (``max(inp - ptoks, 1) <= inp`` tokens
    to prefill) bounds its ``finish`` and ``marginal`` there from below. Read after an estimate on
    ``r``'s current view: without a profile (no cached terms) the fallback subtracts the prefix's
    saving, so it holds; with one, ``finish`` grows by ``c`` and ``marginal`` by ``b c`` per token
    (every other term is the same), so it holds for a non-negative ``c``. Rounding is monotone,
    so the bound holds for the computed values too."""
    terms = r.estimate_cache
    return terms is None or terms.c >= 0.0


class _Terms:
    """The call-independent parts of :func:`estimate` on one view, filled by :func:`_replica_terms`:
    an object with named fields rather than a tuple, so that the compiled build reads and writes
    them as C fields (placement.pxd) instead of packing and unpacking eleven Python objects."""

    __slots__ = ("c", "queued", "has_wait", "wait", "base", "k_", "kv", "grow", "b", "bc", "pending", "s_")


class _ProfileConstants:
    """A latency profile's constants that :func:`_replica_terms` reads, kept on the view
    (``ReplicaView.profile_cache``) with the profile they came from: C fields in the compiled build."""

    __slots__ = ("p", "f", "s_", "k_", "c", "p0")

    def __init__(self, p) -> None:
        self.p = p
        self.f = p.decode_fixed_s
        self.s_ = p.decode_per_seq_s
        self.k_ = p.decode_per_kv_token_s
        self.c = p.prefill_per_token_s
        self.p0 = p.prefill_fixed_s


def _replica_terms(r: ReplicaView, p) -> _Terms:
    """The call-independent parts of :func:`estimate` on ``r`` (profile ``p``), each computed with
    the same floating-point operations in the same order as written out in the module docstring:
    ``c``, ``P_q``, whether there is a slot wait or the idle prefill cost and that time (else 0.0),
    ``F + S b'``, ``K``, ``k``, ``b' - b``, ``b``, ``b c``, ``D``, ``S``."""
    # Conditional expressions instead of ``max``/``min`` on ints: same values, no builtin call.
    b, q, m = r.running, r.queue_len, r.slots if r.slots > 1 else 1
    pc = r.profile_cache
    if pc is None or pc.p is not p:  # the profile's fields, read once per view (attribute reads are slow)
        pc = r.profile_cache = _ProfileConstants(p)
    f, s_, k_, c = pc.f, pc.s_, pc.k_, pc.c
    kv = r.kv_used_tokens
    pending = r.pending_decode_tokens
    short = q + 1 - (m - b)
    has_wait, wait = False, 0.0  # a slot wait or an idle replica's fixed prefill cost, if any
    if b:
        if short > 0:
            has_wait, wait = True, 2.0 * (pending / b) * short / b * (f + s_ * b + k_ * kv)
    elif q == 0:
        has_wait, wait = True, pc.p0
    b_new = b + q + 1 if b + q + 1 < m else m
    t = _Terms.__new__(_Terms)  # no __init__ to run: compiled, a direct allocation (no class call)
    t.c = c
    t.queued = r.queued_prefill_tokens
    t.has_wait = has_wait
    t.wait = wait
    t.base = f + s_ * b_new
    t.k_ = k_
    t.kv = kv
    t.grow = b_new - b
    t.b = b
    t.bc = b * c
    t.pending = pending
    t.s_ = s_
    return t


def kv_need(r: ReplicaView, inp: int, out: int, pkey: str | None, ptoks: int) -> int:
    """KV tokens a call would newly take on ``r``: its whole context (``inp`` prompt plus ``out``
    output tokens) less its stage prefix (``ptoks`` tokens, key ``pkey``) where ``r`` already holds
    that prefix -- a resident prefix's blocks are shared by reference, not copied.

    Why it matters: where KV is tight and prefixes are long (two stages' 3,000-token prefixes
    resident in a 12,000-token replica), counting the prefix again finds no replica with room,
    so routing went KV-blind and piled calls onto replicas that then preempted them
    (benchmarks/cost_at_equal_slo.py, map cells)."""
    return kv_need_at(inp, out, ptoks, pkey is not None and pkey in r.resident_prefixes)


def kv_need_at(inp: int, out: int, ptoks: int, resident: bool) -> int:
    """:func:`kv_need` given whether the call's prefix is resident on the replica."""
    if ptoks and resident:
        return inp + out - ptoks
    return inp + out


def has_kv_room(call: CallView, r: ReplicaView) -> bool:
    """Whether ``r`` has free KV for what the call would newly take there (:func:`kv_need`)."""
    return r.kv_capacity_tokens - r.kv_used_tokens >= kv_need(r, call.input_tokens, call.output_tokens,
                                                                call.prefix_key, call.prefix_tokens)
