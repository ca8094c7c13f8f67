"""The actors of one job, and the one loop that hands them tasks: a batch's images and a clip's chunks alike.

A replacement for a dead worker is not waited for: on a cluster that lost a node there may be no CPU for it until
the job ends, and the work goes on with the workers that are left."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

#: How many times a task is retried after its worker died, before it is reported as failed.
MAX_RETRIES = 3
#: With no worker left, how long to wait for a replacement to start before the rest of the job fails.
STALL_SECONDS = 120.0

T = TypeVar("T")


def lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """The errors of a task whose worker is gone (killed, out of memory, its node lost), not of its input."""
    e = ray.exceptions
    return (e.RayActorError, e.WorkerCrashedError, e.NodeDiedError, e.ObjectLostError)


class Tasks(Protocol[T]):
    """What a job does with each of its items: ``Pool.work`` calls these."""

    def send(self, actor: Any, item: T) -> Any | None:
        """Start ``item`` on ``actor``: the task's reference, or None when the item failed before it was sent."""

    def started(self, item: T, actor: Any) -> None:
        """``item`` runs on ``actor`` now (it is in ``Pool.running``)."""

    def done(self, item: T, actor: Any, value: Any, sent: float) -> None:
        """``item``'s task returned ``value`` (the driver began sending it at ``sent``, perf_counter seconds)."""

    def lost(self, item: T, dead: int, error: BaseException) -> bool:
        """``item``'s worker (pid ``dead``) died; whether to retry the item (a replacement is starting)."""

    def stalled(self, left: list[T]) -> None:
        """No worker is left, and ``left`` will not run."""


class Pool(Generic[T]):
    """The actors of one job: idle ones, the tasks running on the others, and replacements still starting."""

    def __init__(self, ray: Any, spawn: Callable[[], Any], actors: list[Any], pids: dict[Any, int]) -> None:
        self.ray, self.spawn, self.pids = ray, spawn, pids
        self.idle = list(actors)
        self.starting: dict[Any, Any] = {}  # pid() ref -> actor
        self.running: dict[Any, tuple[T, Any, float]] = {}  # task ref -> (item, actor, when it was sent)
        self.stalled_since: float | None = None

    def work(
        self,
        queue: list[T],
        tasks: Tasks[T],
        should_stop: Callable[[], bool],
        pick: Callable[[Any, list[T]], T] | None = None,
    ) -> bool:
        """Run every item of ``queue`` on the actors, one task each at a time, retrying the tasks of workers that
        die; then kill the actors. ``pick(actor, queue)`` chooses an idle actor's next item (else the first).
        True when ``should_stop`` ended the work early."""
        try:
            while queue or self.running:
                self._dispatch(queue, tasks, pick)
                if not self.running and not queue:
                    break
                if self._stalled():
                    tasks.stalled(list(queue))
                    queue.clear()
                    break
                ready = self._wait(timeout=0.5)
                if should_stop():
                    return True
                for ref in ready:
                    self._receive(ref, queue, tasks)
        finally:
            self.close()  # killing the actors ends their tasks (Ray cannot force-cancel an actor's task)
        return False

    def _dispatch(self, queue: list[T], tasks: Tasks[T], pick: Callable[[Any, list[T]], T] | None) -> None:
        while queue and self.idle:
            actor = self.idle.pop(0)
            item = queue[0] if pick is None else pick(actor, queue)
            queue.remove(item)
            # Timed from before the send: the worker may start (and its own clock with it) before .remote() returns.
            sent = time.perf_counter()
            ref = tasks.send(actor, item)
            if ref is None:
                self.idle.insert(0, actor)
                continue
            self.running[ref] = (item, actor, sent)
            tasks.started(item, actor)

    def _receive(self, ref: Any, queue: list[T], tasks: Tasks[T]) -> None:
        item, actor, sent = self.running.pop(ref)
        try:
            value = self.ray.get(ref)
        except lost_errors(self.ray) as exc:
            if tasks.lost(item, self._replace(actor), exc):
                queue.insert(0, item)
            return
        self.idle.append(actor)
        tasks.done(item, actor, value, sent)

    def _replace(self, dead: Any) -> int:
        """A worker died: start another in its place (without waiting); the dead one's pid."""
        pid = self.pids.pop(dead, 0)
        # "Unavailable" may be a node that comes back: it must not come back holding its CPUs.
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(dead, no_restart=True)
        actor = self.spawn()
        self.starting[actor.pid.remote()] = actor
        return pid

    def _wait(self, timeout: float) -> list[Any]:
        """Finished tasks (at most one); started replacements join the idle actors."""
        ready, _ = self.ray.wait([*self.running, *self.starting], num_returns=1, timeout=timeout)
        done = []
        for ref in ready:
            actor = self.starting.pop(ref, None)
            if actor is None:
                done.append(ref)
                continue
            try:
                self.pids[actor] = self.ray.get(ref)
                self.idle.append(actor)
            except lost_errors(self.ray):
                pass  # it died starting: one worker fewer (``_stalled`` says when none is left)
        return done

    def _stalled(self) -> bool:
        """Nothing running, no worker idle, and no replacement started within STALL_SECONDS (or none starting):
        the cluster has no room left for this job's workers."""
        if self.running or self.idle:
            self.stalled_since = None
            return False
        if not self.starting:
            return True
        now = time.perf_counter()
        self.stalled_since = self.stalled_since or now
        return now - self.stalled_since > STALL_SECONDS

    def busy(self) -> dict[int, T]:
        """Worker pid -> the item it is on."""
        return {self.pids[a]: item for item, a, _ in self.running.values() if a in self.pids}

    def close(self) -> None:
        for actor in [*self.pids, *self.starting.values()]:
            self.ray.kill(actor)


def retry_or_give_up(tries: dict[Any, int], item: Any) -> bool:
    """Count one more death of ``item``'s worker; whether it may be retried (at most MAX_RETRIES times)."""
    tries[item] = tries.get(item, 0) + 1
    return tries[item] <= MAX_RETRIES


__all__ = ["MAX_RETRIES", "STALL_SECONDS", "Pool", "Tasks", "lost_errors", "retry_or_give_up"]
