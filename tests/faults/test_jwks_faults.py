"""Fault suite: a slow or stalled JWKS endpoint (loopback) never holds a call whose key is cached, never
blocks another issuer, and a fetch ends at its wall-clock deadline whatever the endpoint drip-feeds.

What must hold: fetch <= deadline + 0.5 s; a cached key is served in < 50 ms while the endpoint stalls;
another issuer's calls are unaffected while one issuer's fetch hangs."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time

import pytest

from cds_service.wire.auth.jwks import JwksError, JwksFetcher, JwksRegistry, RemoteKeySource, run_inline
from tests.faults.hostile_peers import Behaviour, hostile_peer
from tests.wire.test_security_support import ec_key, jwks

DEADLINE_S = 0.6
SLACK_S = 0.5
FAST_S = 0.25  # "at once": far below any deadline, with room for a busy CI machine


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def document(*kids: str) -> bytes:
    return json.dumps(jwks(*(ec_key(kid) for kid in kids))).encode()


@pytest.mark.parametrize("behaviour", ["drip", "drip_headers", "stall"])
def test_a_jwks_fetch_ends_at_its_wall_clock_deadline(behaviour: Behaviour) -> None:
    with hostile_peer(
        behaviour, body=document("k1"), interval_s=0.05, content_type="application/json"
    ) as peer:
        started = time.monotonic()
        with pytest.raises(JwksError):
            JwksFetcher(total_timeout_s=DEADLINE_S, read_timeout_s=5).fetch(peer.base_url + "/jwks")
        assert time.monotonic() - started < DEADLINE_S + SLACK_S


def test_a_cached_key_is_served_at_once_while_a_stale_set_is_refreshed_from_a_stalled_endpoint() -> None:
    clock = Clock()
    body = document("k1")
    with hostile_peer("ok", body=body, content_type="application/json") as healthy:
        source = RemoteKeySource(
            healthy.base_url + "/jwks", JwksFetcher(total_timeout_s=DEADLINE_S), clock=clock, max_age_s=60
        )
        assert source.key_for("k1", "ES384") is not None
        healthy.behaviour = "stall"  # the endpoint now hangs
        clock.now += 61  # and the cached set is stale
        started = time.monotonic()
        for _ in range(20):
            assert source.key_for("k1", "ES384") is not None
        assert time.monotonic() - started < FAST_S


def test_one_stalled_issuer_does_not_block_another_issuers_calls() -> None:
    registry = JwksRegistry(JwksFetcher(total_timeout_s=2.0))
    with (
        hostile_peer("stall") as slow,
        hostile_peer("ok", body=document("good"), content_type="application/json") as fast,
        cf.ThreadPoolExecutor(max_workers=8) as callers,
    ):
        stuck = [
            callers.submit(registry.remote(slow.base_url + "/jwks").key_for, "x", "ES384") for _ in range(6)
        ]
        time.sleep(0.1)
        started = time.monotonic()
        assert registry.remote(fast.base_url + "/jwks").key_for("good", "ES384") is not None
        assert time.monotonic() - started < 0.5
        waited = time.monotonic()
        assert all(future.result() is None for future in stuck)
        assert time.monotonic() - waited < 2.0 + SLACK_S


def test_callers_arriving_during_a_failed_fetch_do_not_each_fetch_again() -> None:
    with hostile_peer("stall") as peer:
        source = RemoteKeySource(
            peer.base_url + "/jwks",
            JwksFetcher(total_timeout_s=0.3),
            min_refresh_interval_s=60,
            run_refresh=run_inline,
        )
        for _ in range(5):
            assert source.key_for("x", "ES384") is None
        time.sleep(0.1)
        assert peer.connections == 1
        assert not source.loaded
