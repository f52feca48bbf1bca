"""Bringing failed replicas back: background health probes with exponential backoff.

A replica leaves rotation when its engine fails (:meth:`Pool.fail_replica`). The
:class:`ReplicaProber` then probes that engine's ``health()`` after
``first_delay_s``, doubling the wait after every failed probe up to
``max_delay_s``, and puts the replica back (:meth:`Pool.restore_replica`) as soon as
a probe answers ready. One probe task per failed replica; it ends when the replica
is back, when the pool is forgotten (retired) or when the prober stops. So a pool
never stays empty while one of its engines is healthy again: at most
``max_delay_s`` after the engine recovered, it serves.

Probes never restart an engine: an engine whose process died stays out of rotation
(and ``/readyz`` says so) until an operator restarts the service.
"""

from __future__ import annotations

import asyncio
import logging

from runtime.orchestrator.pools import Pool, Replica

log = logging.getLogger("cortex.orchestrator")

FIRST_PROBE_S = 0.5
MAX_PROBE_INTERVAL_S = 30.0
PROBE_TIMEOUT_S = 5.0
"""A health probe that takes longer than this counts as failed."""


class ReplicaProber:
    """Probes failed replicas in the background and restores the ones that recover (see module docstring)."""

    def __init__(self, *, first_delay_s: float = FIRST_PROBE_S, max_delay_s: float = MAX_PROBE_INTERVAL_S,
                 timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def watch(self, pool: Pool, replica: Replica) -> None:
        """Start probing ``replica`` (a no-op while it is probed already, or when it has no engine)."""
        key = (pool.name, replica.replica_id)
        if replica.engine is None or key in self._tasks:
            return
        log.warning("replica %s of pool %s left rotation: %s; probing its health", replica.replica_id, pool.name,
                    replica.failure)
        task = asyncio.get_running_loop().create_task(self._probe(pool, replica), name=f"probe:{key[0]}/{key[1]}")
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    @property
    def probing(self) -> int:
        """Replicas being probed now."""
        return len(self._tasks)

    async def _probe(self, pool: Pool, replica: Replica) -> None:
        delay = self.first_delay_s
        while not replica.healthy:
            await asyncio.sleep(delay)
            if await self._ready(replica):
                pool.restore_replica(replica)
                log.warning("replica %s of pool %s is back in rotation", replica.replica_id, pool.name)
                return
            delay = min(delay * 2, self.max_delay_s)

    async def _ready(self, replica: Replica) -> bool:
        assert replica.engine is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                return (await replica.engine.health()).ok
        except Exception:  # a probe that fails in any way is a failed probe
            return False

    async def forget(self, pool: Pool) -> None:
        """Stop probing ``pool``'s replicas (the pool is being stopped)."""
        await self._cancel([t for (name, _), t in self._tasks.items() if name == pool.name])

    async def forget_replica(self, pool: Pool, replica: Replica) -> None:
        """Stop probing one replica (it is leaving its pool: scale-in)."""
        task = self._tasks.get((pool.name, replica.replica_id))
        await self._cancel([task] if task is not None else [])

    async def stop(self) -> None:
        """Stop every probe."""
        await self._cancel(list(self._tasks.values()))

    @staticmethod
    async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
