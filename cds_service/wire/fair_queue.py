"""Fair turns between clients inside one worker process, for the CPU-bound part of a hook call.

gevent runs ready greenlets in the order they became ready, so a client with four calls in flight got
four turns at the evaluation for another client's one, and a tenant within its quota waited behind a
flooder's whole burst. Here the work inside `turn()` runs one call at a time (`slots`, 1: a Python
worker evaluates on one core anyway) and the next turn goes **round-robin between clients**, in rounds:
a client's first waiting call belongs to the current round, its second to the next round, and so on;
the turn goes to the earliest round, first come first served within a round (start-time fair queuing
with a cost of one call, i.e. round-robin by client key). A call therefore waits for the call holding
the turn plus at most one call of each other client, however many calls they have waiting; a client
that was idle saves up no credit (it joins the current round).

Lowered: a client that `lowered(client)` names (the per-client limits name one that was refused for its
rate moments ago: it is the cause of the contention) gets a turn only when no other client's call is
waiting. When nobody else is waiting it runs at once, so a client over its rate is slowed only while
it would slow someone else.

Bounded: at most `max_waiting` calls wait per worker, each for at most `timeout_s`; past either the call
is refused with 503 + Retry-After and an OperationOutcome (the worker is overloaded; another worker or
replica may serve the retry). A client's own excess is already refused earlier with 429 by the per-client
limits (client_limit.py), so it cannot fill this queue alone. Waits are metered
(`cds_fair_queue_wait_seconds{queue}`), refusals counted (`cds_fair_queue_refused_total{queue,reason}`).

Primitives: `threading.Lock` and `threading.Event`, which gevent's monkey-patching (serve_patch.py)
replaces by its own cooperative lock and event, so a waiting greenlet yields to the loop; with gthread
workers, tests and the CLI they are the native ones. A single FIFO semaphore (gevent's or the standard
library's) cannot give the turn by client; the order of the waiting calls (a heap) is the only logic
here.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from cds_service.core.errors import Issue, ServiceError
from cds_service.record.metrics import get_metrics

RefusalReason = Literal["full", "timeout"]
OVERLOADED_RETRY_AFTER_S = 1


class Overloaded(ServiceError):
    """503 + Retry-After: this worker's fair queue is full or the wait for a turn timed out."""

    def __init__(self, queue: str, reason: RefusalReason) -> None:
        what = "too many calls are waiting" if reason == "full" else "the call waited too long for its turn"
        diagnostics = f"the service is overloaded ({what}); retry after {OVERLOADED_RETRY_AFTER_S} s"
        super().__init__([Issue("transient", diagnostics)], 503)
        self.reason: RefusalReason = reason
        self.headers: dict[str, str] = {"Retry-After": str(OVERLOADED_RETRY_AFTER_S)}


class FairQueue:
    """Turns in rounds by client key; `max_waiting` 0 turns the queue off (every call runs at once)."""

    def __init__(
        self,
        name: str,
        *,
        slots: int = 1,
        max_waiting: int = 64,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        lowered: Callable[[str], bool] = lambda _client: False,
    ) -> None:
        self.name = name
        self._lowered = lowered
        self._max_waiting = max_waiting
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._free = slots
        # Waiting calls as (lowered, round, arrival number, client, event): the smallest is served next.
        self._heap: list[tuple[bool, int, int, str, threading.Event]] = []
        self._arrivals = itertools.count()
        self._round = 0  # the round of the call that had the turn last
        self._last_round: dict[str, int] = {}  # client -> round of its latest call, while >= _round

    @property
    def enabled(self) -> bool:
        return self._max_waiting > 0

    @contextmanager
    def turn(self, client: str) -> Iterator[None]:
        """Run the block in `client`'s turn; raises Overloaded (503) when the queue is full or times out."""
        if not self.enabled:
            yield
            return
        started = self._clock()
        self._acquire(client)
        get_metrics().observe_fair_wait(self.name, self._clock() - started)
        try:
            yield
        finally:
            self._release()

    def waiting(self) -> dict[str, int]:
        """Calls waiting per client (for tests and diagnostics)."""
        with self._lock:
            return dict(Counter(client for _lowered, _round, _arrival, client, _event in self._heap))

    def _acquire(self, client: str) -> None:
        with self._lock:
            # A client's next call belongs to the round after its previous one; a client with nothing
            # queued joins the current round (no credit is saved up while idle).
            call_round = max(self._round, self._last_round.get(client, self._round - 1) + 1)
            if self._free > 0 and not self._heap:
                self._free -= 1
                self._round = call_round
                self._last_round[client] = call_round
                return
            if len(self._heap) >= self._max_waiting:
                self._refuse("full")
            granted = threading.Event()
            lowered = self._lowered(client)  # asked only of a call that waits (the limiter's own lock)
            heapq.heappush(self._heap, (lowered, call_round, next(self._arrivals), client, granted))
            self._last_round[client] = call_round
        if granted.wait(self._timeout_s):
            return
        with self._lock:
            if granted.is_set():  # handed the turn between the timeout and the lock: keep it
                return
            self._heap = [entry for entry in self._heap if entry[4] is not granted]
            heapq.heapify(self._heap)
            self._refuse("timeout")

    def _release(self) -> None:
        """Hand the turn straight to the waiting call of the earliest round (first come within a round),
        a lowered client's call only when no other call waits."""
        with self._lock:
            if self._heap:
                _lowered, call_round, _arrival, _client, granted = heapq.heappop(self._heap)
                self._round = max(self._round, call_round)
                granted.set()
            else:
                self._free += 1
            if len(self._last_round) > len(self._heap) + 1:  # forget clients with no call ahead of now
                self._last_round = {
                    client: last for client, last in self._last_round.items() if last >= self._round
                }

    def _refuse(self, reason: RefusalReason) -> None:
        get_metrics().record_fair_refused(self.name, reason)
        raise Overloaded(self.name, reason)
