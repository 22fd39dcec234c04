"""The fair queue's ordering: turns go round-robin between clients, so a client with many calls waiting
cannot push another client's call back by more than one of its own; bounded (full, timeout -> 503 with
Retry-After), metered, and off when its size is 0. Native threads here; the same class under gevent's
patched primitives is checked in tests/faults/test_fair_turns.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from cds_service.record.metrics import get_metrics
from cds_service.wire.fair_queue import FairQueue, Overloaded


def queue_calls(queue: FairQueue, calls: list[str], served: list[str]) -> list[threading.Thread]:
    """Start one thread per call (in list order), each queued before the next starts; each records its
    client when its turn comes and leaves the turn at once."""
    threads = []
    for client in calls:
        before = sum(queue.waiting().values())
        thread = threading.Thread(target=take_turn, args=(queue, client, served))
        thread.start()
        wait_until(lambda before=before: sum(queue.waiting().values()) == before + 1)
        threads.append(thread)
    return threads


def take_turn(queue: FairQueue, client: str, served: list[str]) -> None:
    with queue.turn(client):
        served.append(client)


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def run_with_holder(queue: FairQueue, calls: list[str]) -> list[str]:
    """A first call of client `flood` holds the turn while `calls` queue up; then the order they get it."""
    served: list[str] = []
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with queue.turn("flood"):
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    threads = queue_calls(queue, calls, served)
    release.set()
    for thread in [holder, *threads]:
        thread.join(5)
    return served


def test_a_client_queued_behind_a_flooders_burst_is_served_after_one_of_its_calls() -> None:
    served = run_with_holder(FairQueue("evaluation"), ["flood", "flood", "flood", "healthy"])
    assert served == ["healthy", "flood", "flood", "flood"], "FIFO would serve healthy last"


def test_turns_go_round_robin_between_every_waiting_client() -> None:
    calls = ["a", "a", "a", "b", "b", "c"]
    served = run_with_holder(FairQueue("evaluation"), calls)
    assert served == ["a", "b", "c", "a", "b", "a"]


def test_a_client_that_just_had_its_turn_waits_for_the_next_round() -> None:
    served = run_with_holder(FairQueue("evaluation"), ["healthy", "flood", "flood"])
    assert served == ["healthy", "flood", "flood"]
    served = run_with_holder(FairQueue("evaluation"), ["flood", "healthy", "flood"])
    assert served == ["healthy", "flood", "flood"], "the holder's next call belongs to the next round"
    served = run_with_holder(FairQueue("evaluation"), ["other", "healthy", "flood"])
    assert served == ["other", "healthy", "flood"], "first come first served within a round"


def test_a_client_over_its_rate_gets_a_turn_only_when_no_other_client_waits() -> None:
    queue = FairQueue("evaluation", lowered=lambda client: client == "flood")
    served = run_with_holder(queue, ["flood", "flood", "healthy", "other", "healthy"])
    assert served == ["healthy", "other", "healthy", "flood", "flood"], "round-robin would interleave flood"


def test_lowered_clients_among_themselves_keep_round_robin_and_a_free_turn_is_taken_at_once() -> None:
    queue = FairQueue("evaluation", lowered=lambda _client: True)
    served = run_with_holder(queue, ["flood", "other", "flood"])
    assert served == ["other", "flood", "flood"], "the holder's next call belongs to the next round"
    started = time.monotonic()
    with queue.turn("flood"):
        assert time.monotonic() - started < 0.5, "a free turn is taken at once, lowered or not"


def test_an_idle_queue_gives_the_turn_at_once_and_only_one_at_a_time() -> None:
    queue = FairQueue("evaluation")
    inside: list[int] = []
    lock = threading.Lock()
    most = [0]

    def work(client: str) -> None:
        with queue.turn(client):
            with lock:
                inside.append(1)
                most[0] = max(most[0], len(inside))
            time.sleep(0.005)
            with lock:
                inside.pop()

    threads = [threading.Thread(target=work, args=(f"c{index % 3}",)) for index in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == 1 and queue.waiting() == {}
    with queue.turn("alone"):
        assert queue.waiting() == {}


def test_a_full_queue_refuses_with_503_and_retry_after() -> None:
    queue = FairQueue("evaluation", max_waiting=2)
    refused_before = refusals("evaluation", "full")
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with queue.turn("a"):
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    served: list[str] = []
    threads = queue_calls(queue, ["a", "b"], served)
    with pytest.raises(Overloaded) as refused:
        queue.turn("c").__enter__()
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    assert refused.value.issues[0].code == "transient"
    assert refusals("evaluation", "full") == refused_before + 1
    release.set()
    for thread in [holder, *threads]:
        thread.join(5)
    assert served == ["b", "a"], "the calls that were queued are served after the refusal"


def test_a_call_that_waits_past_the_timeout_is_refused_and_leaves_the_queue() -> None:
    queue = FairQueue("evaluation", timeout_s=0.05)
    refused_before = refusals("evaluation", "timeout")
    with queue.turn("a"):
        with pytest.raises(Overloaded) as refused:
            queue.turn("b").__enter__()
        assert refused.value.reason == "timeout"
        assert queue.waiting() == {}
    assert refusals("evaluation", "timeout") == refused_before + 1
    with queue.turn("b"):
        pass


def test_a_size_of_zero_turns_the_queue_off() -> None:
    queue = FairQueue("evaluation", max_waiting=0)
    entered = threading.Barrier(3, timeout=5)

    def work() -> None:
        with queue.turn("a"):
            entered.wait()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    entered.wait()  # all three inside at once: no turns
    for thread in threads:
        thread.join(5)


def test_the_wait_for_a_turn_is_metered() -> None:
    before = wait_count("evaluation")
    with FairQueue("evaluation").turn("a"):
        pass
    assert wait_count("evaluation") == before + 1


def refusals(queue: str, reason: str) -> float:
    value = get_metrics().registry.get_sample_value(
        "cds_fair_queue_refused_total", {"queue": queue, "reason": reason}
    )
    return value or 0.0


def wait_count(queue: str) -> float:
    value = get_metrics().registry.get_sample_value("cds_fair_queue_wait_seconds_count", {"queue": queue})
    return value or 0.0
