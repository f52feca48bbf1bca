"""SQL and tool executors: ``slots`` parallel servers with a priority queue.

A call's service time is drawn once per call by the run's script (lognormal or
gamma with the stage's ``service_s`` and ``service_cv``), so an executor group
is exactly an M/G/c queue (M/M/c for Poisson arrivals with gamma, ``cv = 1``).
"""

from __future__ import annotations

from heapq import heappop, heappush
from typing import TYPE_CHECKING

from runtime.policies.base import ReplicaView
from runtime.simulator.calls import CANCELLED, QUEUED, RUNNING, Call
from runtime.simulator.cluster import ReplicaSpec

if TYPE_CHECKING:
    from runtime.simulator.sim import Simulator

class ExecutorGroup:
    """``spec.slots`` CPU slots serving SQL/tool calls in key order."""

    def __init__(self, sim: "Simulator", spec: ReplicaSpec):
        self.sim = sim
        self.spec = spec
        self.name = spec.name
        self.slots = spec.slots
        self.busy_slots = 0
        self.waiting: list[tuple] = []
        self.nwaiting = 0
        self.queued_work = 0.0
        self.running_work = 0.0
        self.busy_s = 0.0
        self.view = ReplicaView(replica_id=spec.name, device="CPU", model=None, stages=spec.stages,
                                slots=spec.slots)
        self.dirty = True
        """Always refreshed (executor views are cheap); the attribute matches LLMEngine's."""
        self._finish_cb = self.on_finish  # bound once: one event per call (see Simulator.at)

    def refresh_view(self) -> ReplicaView:
        v = self.view
        v.queue_len = self.nwaiting
        v.running = self.busy_slots
        v.backlog_s = (self.queued_work + self.running_work) / self.slots
        return v

    def enqueue(self, call: Call, prio: tuple) -> None:
        call.state = QUEUED
        call.replica = self
        call.prio = prio
        if self.busy_slots < self.slots:
            self._start(call)
            return
        heappush(self.waiting, (prio, call.seq, call))
        self.nwaiting += 1
        self.queued_work += call.service_s

    def requeue_all(self, key_of) -> None:
        live = [(key_of(c), c.seq, c) for _, _, c in self.waiting if c.state == QUEUED]
        live.sort()
        self.waiting = live

    def cancel(self, call: Call) -> None:
        if call.state == QUEUED:
            call.state = CANCELLED
            self.nwaiting -= 1
            self.queued_work -= call.service_s
        elif call.state == RUNNING:
            call.state = CANCELLED
            self._free(call)

    def _start(self, call: Call) -> None:
        call.state = RUNNING
        now = call.t_start = self.sim.now
        self.busy_slots += 1
        self.running_work += call.service_s
        self.sim.at(now + call.service_s, self._finish_cb, call)

    def _free(self, call: Call) -> None:
        self.busy_slots -= 1
        self.running_work -= call.service_s
        self.busy_s += self.sim.now - call.t_start
        while self.waiting and self.busy_slots < self.slots:
            _, _, nxt = heappop(self.waiting)
            if nxt.state != QUEUED:
                continue
            self.nwaiting -= 1
            self.queued_work -= nxt.service_s
            self._start(nxt)

    def on_finish(self, call: Call) -> None:
        """``call``'s service time is over (ignored when it was cancelled meanwhile)."""
        if call.state != RUNNING or call.replica is not self:
            return
        call.t_end = self.sim.now
        self._free(call)
        self.sim.call_finished(call)
