# ruff: noqa: PLR0917 - benchmark plumbing
"""Scale-out: N service instances (separate processes, separate ports) behind HAProxy, one PostgreSQL.

    .venv/bin/python -m benchmarks.scaleout [--instances 2] [--seconds 20] [--out FILE]
    .venv/bin/python -m benchmarks.scaleout --smoke      # seconds; tiny counts (CI)

What it shows, each instance being `cds-service serve --workers 1` with production settings
(auth required, a distinct ES384 JWT per call, the card ledger and replay store in one PostgreSQL
schema created for the run and dropped at the end):

1. calls/s on the realistic record through the load balancer with 1..N instances (wrk, 16 connections);
2. replay protection exactly once across instances: the same token sent at the same moment to two
   different instances is accepted by exactly one of them (and refused afterwards through the balancer);
3. feedback never lost while one instance is SIGKILLed (master and worker, by pid) in the middle of a
   loop of hook calls and feedback: every feedback acknowledged with 200 is in the database, and an entry
   that got no answer is sent again with a new token (feedback is idempotent), so none is missing;
4. the ledger consistent: every card delivered in a 200 is in `card_ledger`, every stored feedback entry
   is matched to a ledgered card, and every token accepted is in the shared replay store.

Loopback only. HAProxy (Debian package) is installed with apt-get when absent; every process started
here is stopped by its pid.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks import records, servers
from benchmarks.auth import BenchClient, make_client
from benchmarks.harness import SERVICE_PATH
from benchmarks.run import wrk

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FEEDBACK_PATH = f"{SERVICE_PATH}/feedback"
REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "scaleout-results.json"
HAPROXY_CFG = """global
    maxconn 1024
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # Only a connection that failed before the request was sent is retried (elsewhere): a hook call is
    # not idempotent (its token is then spent), so resending after a lost answer is left to the client.
    retries 2
    option redispatch
    # A busy single-worker instance answers /healthz late, not never: a short check timeout would mark it
    # down and turn load into 503s (seen with `inter 250ms`).
    timeout check 5s
frontend cds
    bind 127.0.0.1:{port}
    default_backend instances
backend instances
    balance leastconn
    option httpchk GET /healthz
{servers}
"""


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def ensure_haproxy() -> str:
    found = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "haproxy"], check=True)
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


@dataclass
class Schema:
    """A fresh PostgreSQL schema for the run (search_path through the libpq `options` in the URL)."""

    base_url: str
    name: str = field(default_factory=lambda: f"cds_scaleout_{secrets.token_hex(4)}")

    @property
    def url(self) -> str:
        parsed = make_url(self.base_url).update_query_dict({"options": f"-csearch_path={self.name}"})
        return parsed.render_as_string(hide_password=False)

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.base_url, connect_args={"connect_timeout": 3})
        try:
            with engine.begin() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    def create(self) -> None:
        self._admin(f'CREATE SCHEMA "{self.name}"')

    def drop(self) -> None:
        self._admin(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')

    def query(self, statement: str) -> list[Any]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                return list(connection.execute(text(statement)).all())
        finally:
            engine.dispose()


class Balancer:
    def __init__(self, binary: str, work: Path, port: int) -> None:
        self.binary, self.work, self.port = binary, work, port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ports: list[int]) -> None:
        self.stop()
        lines = "\n".join(
            f"    server i{n} 127.0.0.1:{port} check inter 1s fall 3 rise 2" for n, port in enumerate(ports)
        )
        config = self.work / "haproxy.cfg"
        config.write_text(HAPROXY_CFG.format(port=self.port, servers=lines), encoding="utf-8")
        log_file = open(self.work / "haproxy.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [self.binary, "-db", "-f", str(config)], stdout=log_file, stderr=log_file
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if servers.request("GET", self.port, "/healthz", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("haproxy did not answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


def hook_call(port: int, body: bytes, token: str, timeout: float = 30.0) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return servers.request("POST", port, SERVICE_PATH, body, headers, timeout=timeout)


def throughput(
    balancer: Balancer, ports: list[int], client: BenchClient, body_file: Path, work: Path, seconds: int
) -> list[dict[str, Any]]:
    out = []
    for count in range(1, len(ports) + 1):
        balancer.start(ports[:count])
        tokens = client.write_token_file(work / "wrk-tokens.txt", 60 * seconds * count + 500)
        log(f"throughput: {count} instance(s), wrk -c16 -d{seconds}s")
        figures = wrk(balancer.port, SERVICE_PATH, body_file, tokens, 16, seconds)
        if "duration_us" in figures:  # calls/s counted on 200s only: a fast 503 is no served call
            served = figures["responses"] - figures["non2xx"]
            figures["ok_rps"] = round(served / (figures["duration_us"] / 1e6), 1)
        out.append({"instances": count, **figures})
    balancer.start(ports)
    return out


def replay_across_instances(
    ports: list[int], client: BenchClient, body: bytes, rounds: int, lb_port: int
) -> dict[str, Any]:
    """The same token at the same moment to two instances: exactly one 200, then refused via the balancer."""
    outcomes: dict[str, int] = {}
    exactly_once = 0
    for _ in range(rounds):
        token = client.token()
        barrier = threading.Barrier(2)
        statuses: list[int] = [0, 0]

        def send(
            slot: int,
            port: int,
            token: str = token,
            barrier: threading.Barrier = barrier,
            statuses: list[int] = statuses,
        ) -> None:
            barrier.wait()
            try:
                statuses[slot] = hook_call(port, body, token)[0]
            except OSError:
                statuses[slot] = -1

        threads = [threading.Thread(target=send, args=(slot, ports[slot])) for slot in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        again = hook_call(lb_port, body, token)[0]
        key = f"{sorted(statuses)} then {again}"
        outcomes[key] = outcomes.get(key, 0) + 1
        exactly_once += sorted(statuses) == [200, 401] and again == 401
    return {"rounds": rounds, "exactly_once": exactly_once, "outcomes": outcomes}


@dataclass
class KillLoopState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    delivered_cards: set[str] = field(default_factory=set)
    acknowledged: set[tuple[str, str]] = field(default_factory=set)
    hook_statuses: dict[str, int] = field(default_factory=dict)
    feedback_statuses: dict[str, int] = field(default_factory=dict)
    resent: int = 0
    unacknowledged: int = 0

    def count(self, table: dict[str, int], status: int | str) -> None:
        with self.lock:
            table[str(status)] = table.get(str(status), 0) + 1


def _feedback_until_acknowledged(
    state: KillLoopState, port: int, client: BenchClient, card: str, stamp: str
) -> None:
    entry = {"card": card, "outcome": "overridden", "outcomeTimestamp": stamp,
             "overrideReason": {"reason": {"system": "urn:bench", "code": "not-now"}}}  # fmt: skip
    payload = orjson.dumps({"feedback": [entry]})
    for attempt in range(20):
        token = client.token(audience=f"{client.audience}/feedback")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        try:
            status = servers.request("POST", port, FEEDBACK_PATH, payload, headers, timeout=30.0)[0]
        except OSError:
            status = -1
        state.count(state.feedback_statuses, status)
        if status == 200:
            with state.lock:
                state.acknowledged.add((card, stamp))
                state.resent += attempt > 0
            return
        time.sleep(0.2)
    with state.lock:
        state.unacknowledged += 1


def kill_during_load(
    instances: list[servers.Server],
    lb_port: int,
    client: BenchClient,
    body: bytes,
    seconds: float,
    loops: int,
) -> dict[str, Any]:
    """Hook calls + feedback through the balancer while instance 0 is SIGKILLed halfway through."""
    state = KillLoopState()
    stop_at = time.monotonic() + seconds
    base = datetime.now(UTC).replace(microsecond=0)
    sequence = iter(range(10**9))
    sequence_lock = threading.Lock()

    def loop() -> None:
        while time.monotonic() < stop_at:
            try:
                status, answer = hook_call(lb_port, body, client.token())
            except OSError:
                status, answer = -1, b""
            state.count(state.hook_statuses, status)
            if status != 200:
                time.sleep(0.1)
                continue
            cards = [card["uuid"] for card in orjson.loads(answer).get("cards", [])]
            with state.lock:
                state.delivered_cards.update(cards)
            with sequence_lock:
                stamp = (base + timedelta(milliseconds=next(sequence))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if cards:
                _feedback_until_acknowledged(state, lb_port, client, cards[0], stamp)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(loops)]
    for thread in threads:
        thread.start()
    time.sleep(seconds / 2)
    victim = instances[0]
    assert victim.process is not None
    pids = [victim.process.pid, *victim.worker_pids()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    victim.process.wait(timeout=10)
    killed_at = time.monotonic()
    log(f"SIGKILLed instance 0 (pids {pids})")
    for thread in threads:
        thread.join(timeout=seconds + 120)
    return {"state": state, "killed_pids": pids, "killed_after_s": round(seconds / 2, 1),
            "ran_after_kill_s": round(time.monotonic() - killed_at, 1)}  # fmt: skip


def consistency(schema: Schema, state: KillLoopState) -> dict[str, Any]:
    ledger = {row[0] for row in schema.query("SELECT uuid FROM card_ledger")}
    stored = schema.query(
        "SELECT card, to_char(outcome_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), matched "
        "FROM feedback"
    )
    stored_keys = {(row[0], row[1]) for row in stored}
    replay_rows = int(schema.query("SELECT count(*) FROM jwt_replay")[0][0])
    accepted = state.hook_statuses.get("200", 0) + state.feedback_statuses.get("200", 0)
    return {
        "cards_delivered": len(state.delivered_cards),
        "delivered_cards_missing_from_ledger": len(state.delivered_cards - ledger),
        "ledger_rows": len(ledger),
        "feedback_acknowledged": len(state.acknowledged),
        "feedback_resent_after_failure": state.resent,
        "feedback_never_acknowledged": state.unacknowledged,
        "acknowledged_feedback_missing": len(state.acknowledged - stored_keys),
        "feedback_rows": len(stored),
        "feedback_unmatched": sum(1 for row in stored if not row[2]),
        "tokens_accepted_in_kill_phase": accepted,
        "replay_rows": replay_rows,
        "hook_statuses": state.hook_statuses,
        "feedback_statuses": state.feedback_statuses,
    }


def run(instances_wanted: int, seconds: int, database_url: str, smoke: bool) -> dict[str, Any]:
    haproxy = ensure_haproxy()
    work = Path(tempfile.mkdtemp(prefix="cds-scaleout-"))
    schema = Schema(database_url)
    schema.create()
    lb_port = servers.free_port()
    client = make_client(work / "client", f"http://127.0.0.1:{lb_port}")
    # The replay check sends every token twice on purpose: its 401s are expected, and the failed-auth budget
    # per address (tests/faults/test_auth_flood.py) would turn the later rounds into 429s before decoding.
    env = {**client.environ(), "CDS_DATABASE_URL": schema.url, "CDS_AUTH_FAILURE_LIMIT": ""}
    as_of = datetime.now(UTC).date()
    realistic = records.request_bytes("realistic", as_of)
    small = records.request_bytes("small", as_of)
    body_file = work / "realistic.json"
    body_file.write_bytes(realistic)
    ports = [servers.free_port() for _ in range(instances_wanted)]
    instances = [
        servers.cds_service_server(f"instance-{n}", port, env, workers=1) for n, port in enumerate(ports)
    ]
    balancer = Balancer(haproxy, work, lb_port)
    results: dict[str, Any] = {
        "instances": instances_wanted,
        "cores": os.cpu_count(),
        "seconds": seconds,
        "workers_per_instance": 1,
        "database": "postgresql",
        "as_of": as_of.isoformat(),
        "haproxy": _version([haproxy, "-v"]),
    }
    try:
        for instance in instances:
            instance.start(log_dir=work / "logs")
        balancer.start(ports)
        if shutil.which("wrk"):
            results["throughput"] = throughput(balancer, ports, client, body_file, work, seconds)
        log("replay across instances")
        results["replay"] = replay_across_instances(ports, client, small, 3 if smoke else 50, lb_port)
        log("SIGKILL one instance under load")
        killed = kill_during_load(
            instances, lb_port, client, small, 4 if smoke else seconds, 2 if smoke else 6
        )
        state = killed.pop("state")
        results["kill"] = killed
        results["consistency"] = consistency(schema, state)
    finally:
        balancer.stop()
        for instance in instances:
            instance.stop()
        schema.drop()
    results["verdict"] = verdict(results)
    return results


def _version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "?"


def verdict(results: dict[str, Any]) -> dict[str, bool]:
    check = results["consistency"]
    replay = results["replay"]
    out = {
        "replay_exactly_once": replay["exactly_once"] == replay["rounds"],
        "feedback_never_lost": check["acknowledged_feedback_missing"] == 0
        and check["feedback_never_acknowledged"] == 0,
        "ledger_consistent": check["delivered_cards_missing_from_ledger"] == 0
        and check["feedback_unmatched"] == 0
        and check["replay_rows"] >= check["tokens_accepted_in_kill_phase"],
    }
    figures = results.get("throughput") or []
    if len(figures) >= 2 and all("ok_rps" in item for item in figures):
        out["calls_per_s_grow_with_instances"] = figures[1]["ok_rps"] > figures[0]["ok_rps"]
    return out


def render(results: dict[str, Any]) -> str:
    lines = [
        "| instances | calls/s (200 only) | p50 ms | p99 ms | non-2xx | socket errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for item in results.get("throughput") or []:
        errors = sum(
            item.get(key, 0) for key in ("connect_errors", "read_errors", "write_errors", "timeouts")
        )
        cells = [item["instances"], item.get("ok_rps"), item.get("p50_ms"), item.get("p99_ms")]
        lines.append("| " + " | ".join(str(cell) for cell in [*cells, item.get("non2xx"), errors]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=20, help="per wrk run and for the kill phase")
    parser.add_argument(
        "--database-url", default=os.environ.get("CDS_TEST_DATABASE_URL") or DEFAULT_DATABASE_URL
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts, no timing claims (CI)")
    parser.add_argument("--out", type=Path, help=f"raw figures as JSON (default {RESULTS.name}; smoke: none)")
    args = parser.parse_args(argv)
    if args.instances < 2:
        parser.error("--instances must be at least 2")
    results = run(args.instances, 2 if args.smoke else args.seconds, args.database_url, args.smoke)
    print(render(results))
    print(json.dumps({key: results[key] for key in ("replay", "consistency", "verdict")}, indent=1))
    out = args.out or (None if args.smoke else RESULTS)
    if out is not None:
        out.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        print(f"wrote {out}")
    return 0 if all(results["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
