"""The LLM engine model: one replica under iteration-level continuous batching.

Per-iteration costs come from :class:`planner.profiles.LatencyProfile` (the model
the planner uses), so planner and simulator agree by construction:

* an iteration that admits new sequences prefills their uncached prompt tokens
  ``P`` while the ``b`` running sequences decode one token:
  ``t = iteration_s(P, b, k)`` (``prefill_s(P)`` when nothing else runs);
* a decode-only iteration of ``b`` sequences holding ``k`` KV tokens costs
  ``t(b, k) = F + S b + K k`` (``F, S, K`` = decode fixed / per-sequence /
  per-KV-token costs); every iteration gives each running sequence one token.

Skip-ahead. While the batch does not change, ``k`` grows by ``b`` per step, so
``n`` decode steps take, in closed form::

    T(n) = n (F + S b + K k0) + K b n (n - 1) / 2

The engine jumps straight to the next batch change: the first sequence to
finish (a heap keyed by the step at which each finishes), or the step at which
KV would overflow. An arrival (or cancellation) while decoding cuts the jump
short at the end of the iteration in progress (the largest ``n`` with
``T(n) <= elapsed``, plus one), so new work joins at an iteration boundary, as
in vLLM -- without ever stepping token by token.

KV cache. Capacity is a whole number of blocks (``block_tokens`` each). A
running sequence holds its uncached prompt plus its generated tokens (per-token
granularity within a sequence; block rounding is applied to capacity and to
shared prefixes only). A stage's shared prompt prefix (``prefix_tokens``) is
cached once per replica under ``prefix_key``: a call whose prefix is resident
prefills only the rest. Unreferenced prefixes stay resident until space is
needed, then are evicted least-recently-used first. When the next step would
overflow, the lowest-priority running sequence is preempted (its KV freed; it
re-queues and later recomputes its prompt plus the tokens generated so far,
like vLLM's recompute preemption). With a preemptive policy, a waiting call
may also evict the worst running one when the batch (``slots``) or the KV cache
is full, when the policy's ``preempts(waiting_key, running_key)`` allows it
(by default: a strictly lower key), as vLLM's priority scheduling does.

Token budget and chunked prefill (vLLM's V1 scheduler with chunked prefill,
its default). Each iteration schedules at most ``max_batched_tokens`` tokens:
every running sequence's decode token first, then the rest of a partially
prefilled prompt, then waiting calls in key order while the batch has fewer
than ``slots`` sequences (a partial prefill counts) and KV fits. A call whose
uncached prompt ``fill`` exceeds the budget left ``r`` is admitted with a chunk
of ``r`` tokens and continues over the next iterations, holding the KV of what
it has prefilled (a resident prefix is never recomputed; a new one is computed
first); it joins the decoding batch, and yields its first token, in the
iteration of its last chunk. A chunk iteration costs ``iteration_s(chunk
tokens, b, k)`` like any mixed iteration (the profiles have no prefill-attention
term, so the KV the call already holds adds nothing). Since a partial chunk
spends the whole budget, at most one call is partially prefilled at a time
(vLLM's ``long_prefill_token_threshold`` is 0 by default). The head of the
queue blocks the rest when KV does not fit (no skipping). A partial prefill is
preempted like any running call (recompute: it starts over). A step that had to
preempt a running call to make room for the running ones' growth admits no
waiting call (vLLM's ``Scheduler.schedule``: waiting requests are scheduled only
``if not preempted_reqs``).

CPU contention: engines that share a machine's cores (:meth:`share_cores`, the
simulator's CPU replicas when their profile measured contention) progress at
``1 / LatencyProfile.contention_factor`` of the other engines busy *now*. An
iteration starts with the coefficients scaled for the engines busy then; when
another engine starts or stops computing, the epoch in progress is cut at its
next iteration boundary and the time left to it is rescaled by the new factor
over the old (fluid sharing: work done is conserved).

Disaggregation: a ``prefill`` replica runs only the prefill iteration (the
call leaves after its first token, and the simulator ships its KV); a
``decode`` replica admits transferred calls without a prefill cost.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING

from planner.profiles import LatencyProfile
from runtime.policies.base import ReplicaView
from runtime.simulator.events import pop_event, push_event
from runtime.simulator.calls import CANCELLED, FULL, QUEUED, RUNNING, Call
from runtime.simulator.cluster import ReplicaSpec

if TYPE_CHECKING:
    from runtime.simulator.sim import Simulator


class LLMEngine:
    """One LLM replica (see module docstring for the model)."""

    def __init__(self, sim: "Simulator", spec: ReplicaSpec, profile: LatencyProfile, kv_bytes_per_token: int,
                 capacity_tokens: int, *, speed: float = 1.0, block_tokens: int = 16,
                 max_batched_tokens: int = 8192, preemptive: bool = False,
                 preempts=lambda waiting, running: waiting < running):
        self.sim = sim
        self.spec = spec
        self.name = spec.name
        self.p = profile
        self.role = spec.role
        self.max_batch = spec.slots
        self.block = block_tokens
        self.cap = (capacity_tokens // block_tokens) * block_tokens
        self.max_batched_tokens = max_batched_tokens
        self.preemptive = preemptive
        self.preempts = preempts
        self.F = profile.decode_fixed_s
        self.S = profile.decode_per_seq_s
        self.K = profile.decode_per_kv_token_s
        self.C = profile.prefill_per_token_s
        self.P0 = profile.prefill_fixed_s
        # CPU contention (share_cores): the profile's own coefficients and the current epoch's end,
        # contention factor and base decode / prefill parts.
        self.cores = None
        self.F0, self.S0, self.K0, self.C0, self.P00 = self.F, self.S, self.K, self.C, self.P0
        self.ep_end = 0.0
        self.ep_f = 1.0
        self.ep_D = 0.0
        self.ep_P = 0.0
        # Bound once: the event loop calls it for every iteration boundary (see Simulator.at).
        self._tick_cb = self.on_tick
        self.waiting: list[tuple] = []
        self.nwaiting = 0
        self.running: dict[int, Call] = {}
        # The call being prefilled in chunks (holds KV and a slot; not yet decoding), if any.
        self.chunking: Call | None = None
        self.fin: list[tuple[int, int, Call]] = []
        """(finish step, seq, call) as a heap (events.push_event/pop_event: heapq's, compared on (step, seq);
        two entries equal there are the same call, re-admitted)."""
        self.step = 0
        self.kv_own = 0
        self.kv_attn = 0
        self.prefixes: OrderedDict[str, list[int]] = OrderedDict()
        self.prefix_total = 0
        self.busy = False
        self.in_tick = False
        self.version = 0
        self.ep_t0 = 0.0
        self.ep_n = 0
        self.ep_b = 0
        self.ep_k0 = 0
        self.ep_single = False
        self.pending_cancel: list[Call] = []
        self.sum_finish = 0
        self.queued_prefill = 0
        self.queued_out = 0
        self.kv_peak = 0
        self.preemptions = 0
        self.partial_prefills = 0  # admissions with a partial chunk (a prompt prefilled over several iterations)
        self.iterations = 0
        self.busy_s = 0.0
        self.dirty = True
        self.view = ReplicaView(
            replica_id=spec.name, device=spec.device, model=spec.model, stages=spec.stages, role=spec.role,
            slots=spec.slots, kv_capacity_tokens=self.cap, speed=speed, kv_bytes_per_token=kv_bytes_per_token,
            link_bytes_per_s=spec.link_bytes_per_s, profile=profile,
        )

    def warm(self, key: str, tokens: int) -> None:
        """Make the prefix ``key`` of ``tokens`` prompt tokens resident before the first call (prewarm), in
        whole blocks, unreferenced (evictable as any cached prefix). Call before the simulation runs."""
        if key in self.prefixes or tokens <= 0:
            return
        blocks = -(-tokens // self.block) * self.block
        if self.prefix_total + blocks > self.cap:
            return  # no room: it stays cold
        self.prefixes[key] = [blocks, 0]
        self.prefix_total += blocks
        self.view.resident_prefixes = frozenset(self.prefixes)
        self.dirty = True

    def share_cores(self, cores) -> None:
        """Put this engine on a machine with other CPU engines (a
        :class:`~runtime.engines.shared_cores.SharedCores`, joined here with the replica's width)."""
        self.cores = cores
        cores.join(self, self.spec.tp)

    # -- CPU contention ------------------------------------------------------
    def _scale_for_contention(self) -> None:
        """Scale the iteration coefficients for the other engines busy now (an epoch is starting)."""
        x = self.cores.busy_others(self)
        fd = 1.0 + self.p.contention_decode * x
        fp = 1.0 + self.p.contention_prefill * x
        self.F, self.S, self.K = self.F0 * fd, self.S0 * fd, self.K0 * fd
        self.C, self.P0 = self.C0 * fp, self.P00 * fp

    def _epoch_parts(self, prefill: int, b: int, k: int, end: float) -> None:
        """Remember the epoch just scheduled (ending at ``end``): its base decode and prefill parts and
        its contention factor, which :meth:`_recontend` rescales."""
        if prefill:
            self.ep_D, self.ep_P = self.p.iteration_parts(prefill, b, k)
        else:
            self.ep_D, self.ep_P = 1.0, 0.0
        self.ep_f = self.p.contention_factor(self.ep_D, self.ep_P, self.cores.busy_others(self))
        self.ep_end = end

    def _went(self, busy: bool) -> None:
        """This engine started (``busy``) or stopped computing: the others' epochs change pace."""
        if self.cores.set_busy(self, busy):
            for other in self.cores.others(self):
                other._recontend()

    def _recontend(self) -> None:
        """Another engine of the machine started or stopped: rescale the epoch in progress."""
        if not self.busy:
            return
        f = self.p.contention_factor(self.ep_D, self.ep_P, self.cores.busy_others(self))
        if f == self.ep_f:
            return
        now = self.sim.now
        if not self.ep_single:  # several decode steps: end this epoch at the next iteration boundary
            done = self._steps_done(now - self.ep_t0)
            if done + 1 < self.ep_n:
                self.ep_n = done + 1
                self.ep_end = self.ep_t0 + self._epoch_s(self.ep_n)
        end = self.ep_end = now + (self.ep_end - now) * f / self.ep_f
        self.ep_f = f
        self.version += 1
        self.sim.at(end, self._tick_cb, self.version)
        if self.ep_single:
            self.view.busy_until_s = end

    # -- views ---------------------------------------------------------------
    @property
    def kv_used(self) -> int:
        return self.kv_own + self.prefix_total

    def kv_used_at(self, now: float) -> int:
        """KV tokens in use at ``now`` (interpolating the decode epoch in progress)."""
        used = self.kv_used
        if self.busy and not self.ep_single and self.ep_b:
            used += self.ep_b * min(self._steps_done(now - self.ep_t0), self.ep_n)
        return used

    def refresh_view(self) -> ReplicaView:
        """The policy's view, recomputed only when the engine's state changed since last time."""
        v = self.view
        if not self.dirty:
            return v
        self.dirty = False
        b = len(self.running)
        nw = self.nwaiting
        pending = self.sum_finish - self.step * b
        if self.chunking is not None:
            b += 1  # holds a slot (its remaining prefill and outputs are still counted as queued)
        v.queue_len = nw
        v.running = b
        v.kv_used_tokens = self.kv_own + self.prefix_total
        v.pending_decode_tokens = pending
        v.queued_prefill_tokens = self.queued_prefill
        v.estimate_cache = None  # the view changed: placement.estimate's per-view terms are stale
        # max(1, min(max_batch, b + nw)) without the builtins (hot path; same integers).
        eff = b + nw
        if eff > self.max_batch:
            eff = self.max_batch
        if eff < 1:
            eff = 1
        step = self.F + self.S * eff + self.K * self.kv_attn
        v.backlog_s = self.queued_prefill * self.C + (pending + self.queued_out) * step / eff
        return v

    # -- time model ----------------------------------------------------------
    def _epoch_s(self, n: int) -> float:
        b = self.ep_b
        return n * (self.F + self.S * b + self.K * self.ep_k0) + self.K * b * n * (n - 1) / 2.0

    def _steps_done(self, elapsed: float) -> int:
        """Largest n with T(n) <= elapsed in the current decode epoch."""
        if elapsed <= 0.0:
            return 0
        b = self.ep_b
        K = self.K
        a = K * b / 2.0
        step0 = self.F + self.S * b + K * self.ep_k0
        lin = step0 - a
        if a > 0.0:
            n = int((-lin + math.sqrt(lin * lin + 4.0 * a * elapsed)) / (2.0 * a))
        else:
            n = int(elapsed / lin)
        # Exact correction of the rounded root with T(n) = _epoch_s(n) written out (same operations).
        kb = K * b
        while (n + 1) * step0 + kb * (n + 1) * n / 2.0 <= elapsed:
            n += 1
        while n > 0 and n * step0 + kb * n * (n - 1) / 2.0 > elapsed:
            n -= 1
        return n

    def _iteration_s(self, prefill: int, b: int, k: int) -> float:
        """``LatencyProfile.iteration_s(prefill, b, k)`` for ``prefill > 0`` (``prefill_s`` when
        nothing runs), written out with the same floating-point operations in the same order (one
        per admitting iteration; ``test_engine`` checks it against the profile's)."""
        if b <= 0:
            return self.P0 + self.C * prefill
        return self.F + self.S * b + self.K * k + self.C * prefill

    # -- queue ---------------------------------------------------------------
    def enqueue(self, call: Call, prio: tuple) -> None:
        call.state = QUEUED
        call.replica = self
        call.prio = prio
        self.dirty = True
        heappush(self.waiting, (prio, call.seq, call))
        self.nwaiting += 1
        self.queued_prefill += call.ctx
        self.queued_out += call.remaining
        if self.in_tick:
            return
        if not self.busy:
            self._schedule()
            if self.cores is not None and self.busy:
                self._went(True)
        elif len(self.running) < self.max_batch or (
                self.preemptive and self.running and self.preempts(prio, self._worst_running().prio)):
            self._interrupt()

    def cancel(self, call: Call) -> None:
        """Drop ``call``: from the queue now, from the batch at the next iteration boundary."""
        self.dirty = True
        if call.state == QUEUED:
            call.state = CANCELLED
            self.nwaiting -= 1
            self.queued_prefill -= call.ctx
            self.queued_out -= call.remaining
        elif call.state == RUNNING:
            self.pending_cancel.append(call)
            call.state = CANCELLED
            if not self.in_tick:
                self._interrupt()

    def requeue_all(self, key_of) -> None:
        """Recompute every waiting call's key (policies with aging)."""
        live = [(key_of(c), c.seq, c) for _, _, c in self.waiting if c.state == QUEUED]
        for k, _, c in live:
            c.prio = k
        heapify(live)
        self.waiting = live

    def _interrupt(self) -> None:
        if not self.busy or self.ep_single:
            return
        done = self._steps_done(self.sim.now - self.ep_t0)
        if done + 1 >= self.ep_n:
            return
        n = self.ep_n = done + 1
        self.version += 1
        end = self.ep_end = self.ep_t0 + self._epoch_s(n)
        self.sim.at(end, self._tick_cb, self.version)

    # -- the iteration loop --------------------------------------------------
    def on_tick(self, version: int) -> None:
        """The epoch scheduled as ``version`` ends now (stale versions were cut short: ignored):
        settle it, then schedule the next iteration(s)."""
        if version != self.version:
            return
        self.in_tick = True
        self._settle()
        self.in_tick = False
        self._schedule()
        if self.cores is not None and not self.busy:
            self._went(False)

    def _settle(self) -> None:
        """Apply the finished epoch: advance steps and KV, complete finished calls."""
        n, b = self.ep_n, self.ep_b
        sim = self.sim
        now = sim.now
        self.dirty = True
        self.busy_s += now - self.ep_t0
        self.iterations += n
        step = self.step = self.step + n
        self.kv_own += b * n
        self.kv_attn += b * n
        self.busy = False
        if self.ep_single:
            self.view.busy_until_s = 0.0
        if self.pending_cancel:
            for call in self.pending_cancel:
                if call.seq in self.running:
                    self._release(call)
                elif call is self.chunking:
                    self._drop_chunk(call)
            self.pending_cancel.clear()
        fin = self.fin
        while fin:
            top = fin[0]  # the entry pop_event returns (the heap's least)
            fstep = top[0]  # read once (a C integer when compiled)
            if fstep > step:
                break
            pop_event(fin)
            call = top[2]
            if call.state != RUNNING or call.finish_step != fstep or call.replica is not self:
                continue
            self._release(call)
            call.t_end = now
            sim.call_finished(call)

    def _release(self, call: Call) -> None:
        """Take ``call`` out of the batch and free its KV."""
        del self.running[call.seq]
        own = call.own_tokens + (self.step - call.admit_step)
        self.kv_own -= own
        self.kv_attn -= own + (call.prefix_tokens if call.cached_prefix else 0)
        self.sum_finish -= call.finish_step
        if call.cached_prefix:
            self.prefixes[call.prefix_key][1] -= 1

    def _drop_chunk(self, call: Call) -> None:
        """Take the partially prefilled ``call`` out and free the KV it holds."""
        self.chunking = None
        self.kv_own -= call.own_tokens
        if call.cached_prefix:
            self.prefixes[call.prefix_key][1] -= 1
        self.queued_prefill -= call.chunk_left
        self.queued_out -= call.remaining

    def _preempt(self, call: Call) -> None:
        if call is self.chunking:
            self._drop_chunk(call)  # nothing generated yet: its prompt is recomputed from the start
        else:
            generated = self.step - call.admit_step
            self._release(call)
            call.remaining -= generated
            call.ctx += generated
        self.preemptions += 1
        if call.phase is not FULL and call.phase == "decode":  # (calls.FULL: the identity test first)
            call.phase = FULL
        call.cached_prefix = False
        call.state = QUEUED
        # Its entry in ``fin`` is stale now. Re-admitted as a partial prefill it is RUNNING again
        # but not in ``running``, so a step reaching the old finish step would "finish" it there.
        call.finish_step = -1
        heappush(self.waiting, (call.prio, call.seq, call))
        self.nwaiting += 1
        self.queued_prefill += call.ctx
        self.queued_out += call.remaining

    def _head_preempts(self) -> bool:
        """Whether the best waiting call may evict the worst running one (policy's ``preempts``)."""
        waiting = self.waiting
        while waiting and waiting[0][2].state != QUEUED:
            heappop(waiting)
        return (bool(waiting) and (bool(self.running) or self.chunking is not None)
                and self.preempts(waiting[0][0], self._worst_running().prio))

    def _worst_running(self) -> Call:
        """The running call of the highest (worst) key, a partial prefill included."""
        c = self.chunking
        if not self.running:
            return c
        worst = max(self.running.values(), key=lambda r: (r.prio, r.seq))
        if c is not None and (c.prio, c.seq) > (worst.prio, worst.seq):
            return c
        return worst

    def _held_after(self, own: int, left: int) -> int:
        """Own (non-prefix) KV tokens a call of ``own`` own prompt tokens holds once ``left`` tokens of
        its uncached prompt remain to prefill (a new shared prefix is prefilled first, own tokens last)."""
        return own - left if left < own else 0

    def _chunk_growth(self, call: Call, chunk: int) -> int:
        """Own KV tokens the partial prefill ``call`` adds by prefilling ``chunk`` more tokens."""
        own = call.ctx - call.prefix_tokens if call.cached_prefix else call.ctx
        return self._held_after(own, call.chunk_left - chunk) - call.own_tokens

    def _evict_prefixes(self, need: int, keep: str | None) -> bool:
        """Evict unreferenced prefixes (LRU first) until ``need`` tokens are free."""
        for key in list(self.prefixes):
            if self.cap - self.kv_used >= need:
                return True
            tokens, refs = self.prefixes[key]
            if refs == 0 and key != keep:
                del self.prefixes[key]
                self.prefix_total -= tokens
                self.view.resident_prefixes = frozenset(self.prefixes)
        return self.cap - self.kv_used >= need

    def _schedule(self) -> None:
        sim = self.sim
        now = sim.now
        self.dirty = True
        running = self.running
        budget_max = self.max_batched_tokens
        # Make room for the next step's growth: one token per running sequence, plus the next
        # chunk of a partial prefill (the budget left after the decode tokens).
        preempted = False
        while True:
            b_old = len(running)
            need = b_old
            c = self.chunking
            if c is not None and budget_max > b_old:
                chunk = budget_max - b_old
                if chunk > c.chunk_left:
                    chunk = c.chunk_left
                need += self._chunk_growth(c, chunk)
            if not need or self.kv_own + self.prefix_total + need <= self.cap:
                break
            if not self._evict_prefixes(need, None):
                self._preempt(self._worst_running())
                preempted = True
        b_old = len(running)
        # The profile's convention (LatencyProfile.request_s): a decode step reads the KV of
        # each sequence's context *before* the token it generates, hence ``- b``.
        k_old = self.kv_attn - b_old
        # vLLM counts every scheduled token against the budget, a decode's one included.
        budget = budget_max - b_old
        prefill = 0
        c = self.chunking
        if c is not None and budget > 0:
            chunk = c.chunk_left
            if chunk > budget:
                chunk = budget
            self._prefill_chunk(c, chunk)
            prefill += chunk
            budget -= chunk
        waiting = self.waiting
        # vLLM admits no waiting call in a step that had to preempt a running one for KV (it would
        # only take back the room just freed); with nothing left running, the step admits as usual.
        admit = not preempted or not (running or self.chunking is not None)
        while admit and waiting and budget > 0:
            if len(running) + (self.chunking is not None) >= self.max_batch:
                # Batch full: a preemptive policy may evict its worst running call for the head.
                if not (self.preemptive and self._head_preempts()):
                    break
                self._preempt(self._worst_running())
                continue
            prio, _, call = waiting[0]
            if call.state != QUEUED:
                heappop(waiting)
                continue
            decode = call.phase is not FULL and call.phase == "decode"  # (calls.FULL)
            pkey = call.prefix_key if not decode else None
            ptoks = call.prefix_tokens if pkey else 0
            resident = pkey is not None and pkey in self.prefixes
            ctx = call.ctx
            if decode:
                fill, need = 0, ctx
            elif resident:
                fill = need = ctx - ptoks
            else:
                fill, need = ctx, ctx + (-(-ptoks // self.block) * self.block - ptoks)
            chunk = fill
            growth = len(running) + 1
            if fill > budget:
                if need + 1 > self.cap:
                    break  # it could never hold its whole prompt: it waits, as a whole admission would
                # Partial: KV for the new prefix (if any) and the own tokens of this chunk only, and
                # no token generated this iteration.
                chunk = budget
                own = ctx - ptoks
                need -= own - self._held_after(own, fill - chunk)
                growth -= 1
            if (self.kv_own + self.prefix_total + need + growth > self.cap
                    and not self._evict_prefixes(need + growth, pkey)):
                if self.preemptive and (self.running or self.chunking is not None):
                    worst = self._worst_running()
                    if self.preempts(prio, worst.prio):
                        self._preempt(worst)
                        continue
                break
            heappop(waiting)
            self._admit(call, pkey, ptoks, resident, fill, chunk)
            prefill += chunk
            budget -= chunk
        used = self.kv_own + self.prefix_total
        if used > self.kv_peak:
            self.kv_peak = used
        if self.cores is not None and (prefill or running):
            self._scale_for_contention()
        if prefill:
            self.ep_single = True
            self.ep_t0 = now
            self.ep_n = 1
            self.ep_b = len(running)
            self.ep_k0 = self.kv_attn
            self.busy = True
            version = self.version = self.version + 1
            dt = self._iteration_s(prefill, b_old, k_old)
            end = now + dt
            # Set here, not in refresh_view (hot): until the iteration ends, a new call cannot join.
            self.view.busy_until_s = end
            # Simulator.at inlined (one event per iteration boundary).
            sim._seq += 1
            push_event(sim._events, (end, sim._seq, self._tick_cb, version))
            if self.cores is not None:
                self._epoch_parts(prefill, b_old, k_old, end)
            return
        if not running:
            return
        fin = self.fin
        fstep = 0  # the finish step at the top of ``fin`` (read once: a C integer when compiled)
        while fin:  # drop stale finish entries (cancelled, preempted or re-admitted calls)
            top = fin[0]
            fstep = top[0]
            c = top[2]
            if c.state == RUNNING and c.finish_step == fstep and c.replica is self:
                break
            pop_event(fin)
        b = len(running)
        n = fstep - self.step if fin else 1
        n_kv = (self.cap - used) // b
        # max(1, min(n, n_kv)) without the builtins (same integers).
        if n_kv < n:
            n = n_kv
        if n < 1 or (not admit and self.nwaiting):
            n = 1  # a step that skipped admission after a preemption: the next one admits again
        k0 = self.kv_attn - b
        self.ep_single = False
        self.ep_t0 = now
        self.ep_n = n
        self.ep_b = b
        self.ep_k0 = k0
        self.busy = True
        version = self.version = self.version + 1
        # _epoch_s(n) inlined, same operations in the same order (bit-identical times).
        K = self.K
        t = now + (n * (self.F + self.S * b + K * k0) + K * b * n * (n - 1) / 2.0)
        sim._seq += 1
        push_event(sim._events, (t, sim._seq, self._tick_cb, version))
        if self.cores is not None:
            self._epoch_parts(0, b, k0, t)

    def _admit(self, call: Call, pkey: str | None, ptoks: int, resident: bool, fill: int, chunk: int) -> None:
        """Take ``call`` off the queue with ``chunk`` of its ``fill`` uncached prompt tokens prefilled this
        iteration: it joins the decoding batch when that is all of them, else it becomes the partial prefill."""
        ctx = call.ctx
        self.nwaiting -= 1
        self.queued_prefill -= ctx
        if pkey is not None:
            prefixes = self.prefixes
            if not resident:
                tokens = -(-ptoks // self.block) * self.block
                prefixes[pkey] = [tokens, 0]
                self.prefix_total += tokens
                self.view.resident_prefixes = frozenset(prefixes)
            else:
                prefixes.move_to_end(pkey)  # a new entry is last already
            prefixes[pkey][1] += 1
            call.cached_prefix = True
            own = ctx - ptoks
        else:
            call.cached_prefix = False
            own = ctx
        call.state = RUNNING
        if call.t_start < 0.0:
            call.t_start = self.sim.now
        if chunk < fill:
            # Its remaining prefill and its outputs stay counted as queued work until it joins.
            left = call.chunk_left = fill - chunk
            held = call.own_tokens = self._held_after(own, left)
            self.kv_own += held
            self.queued_prefill += left
            self.chunking = call
            self.partial_prefills += 1
            return
        call.own_tokens = own
        self.kv_own += own
        self._join(call)

    def _prefill_chunk(self, call: Call, chunk: int) -> None:
        """Prefill the next ``chunk`` tokens of the partial prefill ``call``; after its last chunk it
        joins the decoding batch."""
        grow = self._chunk_growth(call, chunk)
        call.own_tokens += grow
        self.kv_own += grow
        call.chunk_left -= chunk
        self.queued_prefill -= chunk
        if call.chunk_left == 0:
            self.chunking = None
            self._join(call)

    def _join(self, call: Call) -> None:
        """Add the fully prefilled ``call`` (its own KV already counted) to the decoding batch."""
        remaining, step = call.remaining, self.step
        self.queued_out -= remaining
        self.kv_attn += call.own_tokens + (call.prefix_tokens if call.cached_prefix else 0)
        call.admit_step = step
        # A full/prefill call's (last) prefill iteration yields its first token; a decode call
        # already has it. The prefill side of a disaggregated pair stops after one token.
        finish = step + (1 if (call.phase is not FULL and call.phase == "prefill") or remaining < 1 else remaining)
        call.finish_step = finish
        self.running[call.seq] = call
        self.sum_finish += finish
        push_event(self.fin, (finish, call.seq, call))
