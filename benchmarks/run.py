# ruff: noqa: E501, PLR0917 - a report template and benchmark plumbing
"""Run every benchmark and write BENCHMARKS.md (and the raw figures as JSON).

    benchmarks/run.sh            # full run (about 25 minutes on 2 cores), writes BENCHMARKS.md
    benchmarks/run.sh --smoke    # seconds; tiny counts, writes to a temporary file (CI)

Everything runs on 127.0.0.1 only; every load loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from benchmarks import records, servers
from benchmarks.auth import ISSUER, BenchClient, make_client
from benchmarks.harness import SERVICE_PATH, WsgiCaller, build_app

REPO_ROOT = Path(__file__).resolve().parents[1]
LUA = REPO_ROOT / "benchmarks" / "wrk_tokens.lua"
RESULTS_JSON = REPO_ROOT / "benchmarks" / "results.json"
TARGETS = {
    "heavy_floor_ratio": 3.0,
    "heavy_p50_ms": 25.0,
    "fhir_path_ms": 250.0,
    "wrk_c4_p99_ms": 50.0,
    "wrk_c16_rps": 250.0,
    "linear_time_ratio": 11.0,
    "rss_growth_pct": 10.0,
    "ready_s": 3.0,
}


@dataclass(frozen=True)
class Mode:
    smoke: bool
    calls: int  # in-process calls per size and variant (>= 200 in full mode)
    scaling_calls: int
    http_calls: int
    wrk_seconds: int
    memory_calls: int
    fhir_calls: int

    @classmethod
    def of(cls, smoke: bool) -> Mode:
        if smoke:
            return cls(True, 3, 2, 2, 1, 200, 2)
        return cls(False, 200, 40, 100, 30, 100_000, 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts (CI): checks that it all runs")
    parser.add_argument(
        "--output", type=Path, help="Markdown report (default BENCHMARKS.md; smoke: a temp file)"
    )
    parser.add_argument("--json", type=Path, help="raw figures as JSON (default next to the report)")
    parser.add_argument(
        "--skip", default="", help="comma list of phases to skip: http,wrk,memory,peers,fhir,variants"
    )
    parser.add_argument("--memory-calls", type=int, help="calls for the memory phase (default 100000)")
    parser.add_argument("--render", type=Path, help="only re-write the report from a results JSON file")
    args = parser.parse_args(argv)
    mode = Mode.of(args.smoke)
    if args.render:
        results = json.loads(args.render.read_text(encoding="utf-8"))
        output = args.output or REPO_ROOT / "BENCHMARKS.md"
        output.write_text(render(results, Mode.of(results.get("mode") == "smoke")), encoding="utf-8")
        print(f"wrote {output}")
        return 0
    if args.memory_calls:
        mode = Mode(**{**mode.__dict__, "memory_calls": args.memory_calls})
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    work = Path(tempfile.mkdtemp(prefix="cds-bench-"))
    output = args.output or (work / "BENCHMARKS.md" if mode.smoke else REPO_ROOT / "BENCHMARKS.md")
    json_path = args.json or (output.with_suffix(".json") if mode.smoke else RESULTS_JSON)
    results: dict[str, Any] = {"mode": "smoke" if mode.smoke else "full", "work_dir": str(work)}
    results["machine"] = machine()
    as_of = dt.datetime.now(dt.UTC).date()
    results["as_of"] = as_of.isoformat()
    started = time.monotonic()
    try:
        run_all(mode, skip, work, as_of, results)
    finally:
        results["elapsed_s"] = round(time.monotonic() - started, 1)
        json_path.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        output.write_text(render(results, mode), encoding="utf-8")
        print(f"wrote {output} and {json_path}")
    return 0


def run_all(mode: Mode, skip: set[str], work: Path, as_of: dt.date, results: dict[str, Any]) -> None:
    bodies = {size: records.request_bytes(size, as_of) for size in records.SIZES}
    stub_request = records.request_for("realistic", as_of)
    stub = ExternalStub(delay_s=0.1, page_size=300)
    stub_url = stub.start()
    try:
        client = make_client(work, "http://127.0.0.1:8000", fhir_servers=(stub_url,))
        results["records"] = record_info(bodies, as_of)
        log("in-process: production settings")
        results["inprocess"] = inprocess(mode, client, bodies, frozenset(skip))
        log("in-process: scaling")
        results["scaling"] = scaling(mode, client, as_of)
        if "fhir" not in skip:
            log("FHIR path")
            results["fhir"] = fhir_path(mode, client, stub, stub_request)
    finally:
        stub.stop()
    if "http" not in skip:
        results["http"] = http_phase(mode, skip, work, bodies, as_of)
    if "memory" not in skip:
        results["memory"] = memory_phase(mode, work, bodies["small"])


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# Machine and records
# ---------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    versions = {}
    for package in ("flask", "werkzeug", "gunicorn", "orjson", "pydantic", "pydantic-core", "fhir.resources",
                    "fhir-core", "PyJWT", "cryptography", "SQLAlchemy"):  # fmt: skip
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "-"
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout + out.stderr).splitlines()[0] if (out.stdout + out.stderr) else ""
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + (" (working tree has uncommitted changes)" if dirty else ""),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "wrk": wrk_version,
    }


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def record_info(bodies: dict[str, bytes], as_of: dt.date) -> dict[str, Any]:
    """Sizes, and how many entries the service validates (with its evaluation date, as in production)."""
    from cds_service.facts.parse import parse_resources  # noqa: PLC0415
    from cds_service.knowledge.loader import packaged_knowledge  # noqa: PLC0415

    knowledge = packaged_knowledge()
    info = {}
    for size, body in bodies.items():
        request = orjson.loads(body)
        counts = records.counts(request)
        resources = [
            entry.get("resource", entry)
            for value in request["prefetch"].values()
            if value
            for entry in (value.get("entry") or [] if value.get("resourceType") == "Bundle" else [value])
        ]
        parsed = parse_resources(resources, knowledge, as_of=as_of)
        validated = len({id(model) for model in (*parsed.medications.values(), *parsed.devices.values())})
        validated += sum(
            len(getattr(parsed, name))
            for name in ("patients", "observations", "conditions", "procedures", "allergies",
                         "medication_statements", "medication_requests", "medication_administrations",
                         "medication_dispenses", "diagnostic_reports")
        )  # fmt: skip
        info[size] = {
            "bytes": len(body),
            "resources": counts["total"],
            "validated": validated,
            "per_key": counts,
        }
    return info


# ---------------------------------------------------------------------------------------------------------
# In-process: service time vs the stdlib JSON floor, production settings (auth on, ledger on)
# ---------------------------------------------------------------------------------------------------------


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return {
        "n": len(times),
        "p50_ms": round(statistics.median(times) * 1000, 3),
        "p90_ms": round(pct(90), 3),
        "p99_ms": round(pct(99), 3),
        "mean_ms": round(statistics.fmean(times) * 1000, 3),
        "max_ms": round(max(times) * 1000, 3),
    }


def ledger_rows(client: BenchClient, database_file: str) -> int | None:
    try:
        with sqlite3.connect(client.work_dir / database_file) as db:
            return int(db.execute("select count(*) from card_ledger").fetchone()[0])
    except sqlite3.Error:
        return None


def inprocess(
    mode: Mode, client: BenchClient, bodies: dict[str, bytes], skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    from benchmarks.floor_app import create_floor_app  # noqa: PLC0415

    out: dict[str, Any] = {}
    env = client.environ(database_file="ledger-inprocess.sqlite3")
    app = build_app(env)
    call = WsgiCaller(app)
    status_without_token, _ = call(bodies["small"], None)
    before = ledger_rows(client, "ledger-inprocess.sqlite3")
    call(bodies["small"], client.token())
    after = ledger_rows(client, "ledger-inprocess.sqlite3")
    out["auth_active"] = status_without_token == 401
    out["status_without_token"] = status_without_token
    out["ledger_active"] = before is not None and after is not None and after > before
    out["env"] = {k: v for k, v in env.items() if k not in ("CDS_DATA_DIR",)}
    floor_call = WsgiCaller(create_floor_app())
    variants: dict[str, Callable[[bytes, str | None], tuple[int, bytes]]] = {"production": call}
    sizes: dict[str, Any] = {}
    for size, body in bodies.items():
        log(f"  {size}: {len(body)} bytes")
        sizes[size] = measure_size(mode, client, call, floor_call, body)
    out["sizes"] = sizes
    if "variants" in skip:
        return out
    # Variants, each with the same calls: what auth costs, and what the proposed changes would give.
    extra: dict[str, Any] = {}
    off_db = f"sqlite:///{client.work_dir / 'ledger-off.sqlite3'}"
    off_app = build_app({**env, "CDS_AUTH_MODE": "off", "CDS_DATABASE_URL": off_db})
    variants["auth_off"] = WsgiCaller(off_app)
    extra["auth_off"] = {
        size: timed(mode.calls, variants["auth_off"], body, lambda: None) for size, body in bodies.items()
    }
    with as_of_hint():
        extra["as_of_hint"] = {
            size: timed(mode.calls, call, body, client.token) for size, body in bodies.items()
        }
    with gc_frozen():
        extra["gc_freeze"] = {
            size: timed(mode.calls, call, body, client.token) for size, body in bodies.items()
        }
        with as_of_hint():
            extra["as_of_hint+gc_freeze"] = {
                size: timed(mode.calls, call, body, client.token) for size, body in bodies.items()
            }
    out["variants"] = extra
    return out


def measure_size(
    mode: Mode,
    client: BenchClient,
    call: Callable[[bytes, str | None], tuple[int, bytes]],
    floor_call: Callable[[bytes, str | None], tuple[int, bytes]],
    body: bytes,
) -> dict[str, Any]:
    status, response = call(body, client.token())
    if status != 200:
        raise RuntimeError(f"service answered {status}: {response[:300]!r}")
    response_object = json.loads(response)
    for _ in range(2):
        call(body, client.token())
    tokens = list(client.tokens(mode.calls))
    ours: list[float] = []
    floor: list[float] = []
    floor_orjson: list[float] = []
    floor_app: list[float] = []
    statuses: dict[int, int] = {}
    perf = time.perf_counter
    for index in range(mode.calls):
        t0 = perf()
        status, _ = call(body, tokens[index])
        t1 = perf()
        json.loads(body)
        json.dumps(response_object)
        t2 = perf()
        orjson.loads(body)
        orjson.dumps(response_object)
        t3 = perf()
        floor_call(body, None)
        t4 = perf()
        statuses[status] = statuses.get(status, 0) + 1
        ours.append(t1 - t0)
        floor.append(t2 - t1)
        floor_orjson.append(t3 - t2)
        floor_app.append(t4 - t3)
    result = {
        "response_bytes": len(response),
        "cards": len(response_object.get("cards", [])),
        "statuses": statuses,
        "ours": summary(ours),
        "stdlib_floor": summary(floor),
        "orjson_floor": summary(floor_orjson),
        "floor_app": summary(floor_app),
    }
    result["floor_ratio"] = round(result["ours"]["p50_ms"] / result["stdlib_floor"]["p50_ms"], 2)
    result["floor_app_ratio"] = round(result["ours"]["p50_ms"] / result["floor_app"]["p50_ms"], 2)
    return result


def timed(
    calls: int,
    call: Callable[[bytes, str | None], tuple[int, bytes]],
    body: bytes,
    token: Callable[[], str | None],
) -> dict[str, Any]:
    call(body, token())
    tokens = [token() for _ in range(calls)]
    times = []
    statuses: dict[int, int] = {}
    for index in range(calls):
        t0 = time.perf_counter()
        status, _ = call(body, tokens[index])
        times.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1
    return {**summary(times), "statuses": statuses}


@contextmanager
def as_of_hint() -> Iterator[None]:
    """Formerly a projection (the evaluation date passed to parse_resources); production does it now,
    so the column only shows noise. Nothing is patched: `decide` keeps its production signature."""
    yield


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Projection: gc.freeze() once the app is loaded (start-up objects leave the collector's scans)."""
    import gc  # noqa: PLC0415

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def scaling(mode: Mode, client: BenchClient, as_of: dt.date) -> dict[str, Any]:
    app = build_app(client.environ(database_file="ledger-scaling.sqlite3"))
    call = WsgiCaller(app)
    out: dict[str, Any] = {}
    for size in ("scale-5", "scale-50"):
        body = records.request_bytes(size, as_of)
        resources = records.counts(orjson.loads(body))["total"]
        out[size] = {
            "bytes": len(body),
            "resources": resources,
            **timed(mode.scaling_calls, call, body, client.token),
        }
    small, large = out["scale-5"], out["scale-50"]
    out["resource_ratio"] = round(large["resources"] / small["resources"], 2)
    out["time_ratio"] = round(large["p50_ms"] / small["p50_ms"], 2)
    out["time_ratio_per_10x_resources"] = round(out["time_ratio"] * 10 / out["resource_ratio"], 2)
    return out


# ---------------------------------------------------------------------------------------------------------
# FHIR path: no prefetch, every FHIR request answered after 100 ms
# ---------------------------------------------------------------------------------------------------------


class ExternalStub:
    """benchmarks.fhir_stub in its own process (its JSON work must not compete for our GIL)."""

    def __init__(self, delay_s: float, page_size: int) -> None:
        self.delay_s = delay_s
        self.page_size = page_size
        self.base_url = ""
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fhir_stub", "--delay", str(self.delay_s),
             "--page-size", str(self.page_size)],
            cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()
        return self.base_url

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def fhir_path(
    mode: Mode, client: BenchClient, stub: ExternalStub, stub_request: dict[str, Any]
) -> dict[str, Any]:
    from cds_service.gather.shared_http import clear_metadata_cache  # noqa: PLC0415

    env = client.environ(database_file="ledger-fhir.sqlite3")
    if mode.smoke:  # the smoke run checks the wiring, not the timing: a busy CI machine must not 412 it
        env = {**env, "CDS_FHIR_DEADLINE_S": "20", "CDS_FHIR_READ_TIMEOUT_S": "15"}
    app = build_app(env)
    call = WsgiCaller(app)
    clear_metadata_cache()
    patient_id = stub_request["context"]["patientId"]
    times: list[float] = []
    statuses: dict[int, int] = {}
    for _ in range(mode.fhir_calls):
        body = orjson.dumps(
            {
                "hook": "patient-view",
                "hookInstance": str(uuid.uuid4()),
                "fhirServer": stub.base_url,
                "fhirAuthorization": {"access_token": "stub-token", "token_type": "Bearer", "expires_in": 300,
                                      "scope": "patient/*.read", "subject": "osteoporosis-escalation"},
                "context": {"userId": "Practitioner/demo-1", "patientId": patient_id},
            }
        )  # fmt: skip
        token = client.token()
        t0 = time.perf_counter()
        status, response = call(body, token)
        times.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1
        if status != 200:
            print(f"  FHIR path answered {status}: {response[:300]!r}")
    return {
        "delay_ms": stub.delay_s * 1000,
        "page_size": stub.page_size,
        "first_call_ms": round(times[0] * 1000, 1),
        "later_calls": summary(times[1:]) if len(times) > 1 else None,
        "statuses": statuses,
    }


# ---------------------------------------------------------------------------------------------------------
# HTTP: cds-service serve (production gunicorn settings), the floor app, the stack floor, HealthChain; wrk
# ---------------------------------------------------------------------------------------------------------


def production_env(work: Path, name: str) -> tuple[BenchClient, dict[str, str]]:
    client = make_client(work / name, "http://127.0.0.1:8000")
    return client, client.environ()


WRK_CONNECTIONS = (1, 4, 16, 64)


def http_phase(
    mode: Mode, skip: set[str], work: Path, bodies: dict[str, bytes], as_of: dt.date
) -> dict[str, Any]:
    """Ours, the floor app and the stack floor run side by side; each wrk load runs on ours, then on the
    floor app, then on the stack floor at once, so that all see the same machine (the shared machine's load
    changes over minutes)."""
    out: dict[str, Any] = {}
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    client, env = production_env(work, "http")
    port = servers.free_port()
    ours = servers.cds_service_server("cds-service", port, env, workers=2)
    log("HTTP: cds-service serve (2 workers)")
    out["ours_ready_s"] = round(ours.start(log_dir=logs), 3)
    floor_port = servers.free_port()
    floor = servers.floor_server(floor_port, env)
    stack_port = servers.free_port()
    stack = stack_floor_server(stack_port, env, client, work, bodies, as_of)
    try:
        log("HTTP: floor app")
        out["floor_ready_s"] = round(floor.start(log_dir=logs), 3)
        log("HTTP: stack floor (JWT + jti + validation of what the service validates, 2 workers)")
        out["stack_floor_ready_s"] = round(stack.start(log_dir=logs), 3)
        status, _ = servers.request(
            "POST", port, SERVICE_PATH, bodies["small"], {"Content-Type": "application/json"}
        )
        out["auth_active"] = status == 401
        out["status_without_token"] = status
        status, _ = servers.request(
            "POST", stack_port, SERVICE_PATH, bodies["small"], {"Content-Type": "application/json"}
        )
        out["stack_floor_status_without_token"] = status
        out["ours_sequential"] = sequential(mode, port, SERVICE_PATH, bodies, client.token)
        out["floor_sequential"] = sequential(mode, floor_port, SERVICE_PATH, bodies, lambda: None)
        out["stack_floor_sequential"] = sequential(mode, stack_port, SERVICE_PATH, bodies, client.token)
        if "wrk" not in skip and shutil.which("wrk"):
            out["ours_wrk"], out["floor_wrk"], out["stack_floor_wrk"] = {}, {}, {}
            body_file = work / "wrk-body.json"
            body_file.write_bytes(bodies["realistic"])
            for connections in WRK_CONNECTIONS:
                for key, server_port in (
                    ("ours_wrk", port), ("floor_wrk", floor_port), ("stack_floor_wrk", stack_port)
                ):  # fmt: skip
                    out[key][f"c{connections}"] = wrk_run(
                        mode, server_port, body_file, client, work, connections
                    )
    finally:
        ours.stop()
        floor.stop()
        stack.stop()
    if "peers" not in skip:
        out["healthchain"] = healthchain_phase(mode, bodies, logs)
    return out


def stack_floor_server(
    port: int, env: dict[str, str], client: BenchClient, work: Path, bodies: dict[str, bytes], as_of: dt.date
) -> servers.Server:
    """benchmarks/stack_floor_app.py, planned for every record this phase sends, verifying `client`'s tokens."""
    record_dir = work / "stack-floor-records"
    record_dir.mkdir(exist_ok=True)
    files = []
    for size, body in bodies.items():
        files.append(record_dir / f"{size}.json")
        files[-1].write_bytes(body)
    return servers.stack_floor_server(
        port, env, jwks_file=client.jwks_file, issuer=ISSUER, audience=client.audience,
        as_of=as_of.isoformat(), record_files=files,
    )  # fmt: skip


def sequential(
    mode: Mode, port: int, path: str, bodies: dict[str, bytes], token: Callable[[], str | None]
) -> dict[str, Any]:
    """One keep-alive connection, calls one after another: request sent -> response read."""
    out: dict[str, Any] = {}
    for size, body in bodies.items():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            tokens = [token() for _ in range(mode.http_calls + 2)]
            statuses: dict[int, int] = {}
            times = []
            for index, tok in enumerate(tokens):
                headers = {"Content-Type": "application/json"}
                if tok:
                    headers["Authorization"] = f"Bearer {tok}"
                t0 = time.perf_counter()
                status, _ = servers.request("POST", port, path, body, headers, connection=conn)
                elapsed = time.perf_counter() - t0
                if index >= 2:  # two warm-up calls (one per worker, roughly)
                    times.append(elapsed)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()
        out[size] = {**summary(times), "statuses": statuses}
    return out


def wrk_run(
    mode: Mode, port: int, body_file: Path, client: BenchClient, work: Path, connections: int
) -> dict[str, Any]:
    token_file = client.write_token_file(
        work / "wrk-tokens.txt", min(40 * max(connections, 4), 700) * mode.wrk_seconds + 4000
    )
    log(f"  wrk -c{connections} -d{mode.wrk_seconds}s on port {port}")
    return wrk(port, SERVICE_PATH, body_file, token_file, connections, mode.wrk_seconds)


def wrk(
    port: int, path: str, body_file: Path, token_file: Path, connections: int, seconds: int, limit: int = 0
) -> dict[str, Any]:
    argv = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA),
        f"http://127.0.0.1:{port}{path}", "--", str(body_file), str(token_file), str(limit), "1",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data: dict[str, Any] = json.loads(line.removeprefix("WRKJSON "))
            duration = data["duration_us"] / 1e6
            data["rps"] = round(data["responses"] / duration, 1) if duration else 0.0
            for key in ("p50_us", "p90_us", "p99_us", "max_us"):
                data[key.replace("_us", "_ms")] = round(data.pop(key) / 1000, 2)
            data["mean_ms"] = round(data.pop("mean_us") / 1000, 2)
            data["connections"] = connections
            data["seconds"] = seconds
            return data
    return {"error": (done.stdout + done.stderr)[-2000:]}


def healthchain_phase(mode: Mode, bodies: dict[str, bytes], logs: Path) -> dict[str, Any]:
    if not servers.PEERS_PYTHON.exists():
        return {
            "error": "benchmarks/.venv-peers is absent (benchmarks/run.sh creates it: pip install healthchain)"
        }
    check = subprocess.run(
        [str(servers.PEERS_PYTHON), "-c", "import healthchain, importlib.metadata as m; print(m.version('healthchain'))"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if check.returncode != 0:
        return {"error": "healthchain does not import: " + check.stderr.strip()[-500:]}
    port = servers.free_port()
    server = servers.healthchain_server(port)
    log("HTTP: HealthChain (uvicorn)")
    try:
        ready = server.start(log_dir=logs)
    except RuntimeError as error:
        tail = server.log_file.read_text()[-1500:] if server.log_file else ""
        return {"error": f"{error}: {tail}"}
    try:
        result = sequential(mode, port, "/cds/cds-services/osteoporosis-escalation", bodies, lambda: None)
    finally:
        server.stop()
    return {"version": check.stdout.strip(), "ready_s": round(ready, 3), "sequential": result}


# ---------------------------------------------------------------------------------------------------------
# Memory: one worker's RSS over many calls
# ---------------------------------------------------------------------------------------------------------


def memory_phase(mode: Mode, work: Path, body: bytes) -> dict[str, Any]:
    if not shutil.which("wrk"):
        return {"error": "wrk is not installed"}
    client, env = production_env(work, "memory")
    port = servers.free_port()
    server = servers.cds_service_server("cds-service-memory", port, env, workers=1)
    log(f"memory: {mode.memory_calls} calls to one worker")
    server.start(log_dir=work / "logs")
    body_file = work / "memory-body.json"
    body_file.write_bytes(body)
    samples: list[dict[str, Any]] = []
    try:
        pids = server.worker_pids()
        if len(pids) != 1:
            return {"error": f"expected one worker, found {pids}"}
        worker = pids[0]
        servers.request("POST", port, SERVICE_PATH, body, {"Content-Type": "application/json",
                                                          "Authorization": f"Bearer {client.token()}"})  # fmt: skip
        samples.append({"calls": 1, "rss_kib": servers.rss_kib(worker)})
        # Duration-bounded chunks (wrk cannot stop after N calls), fresh tokens for each, until the
        # target count is reached or the time budget is spent (bounded in count and in time).
        chunk_s = 2 if mode.smoke else 30
        budget_s = 60 if mode.smoke else 1800
        rate = 300.0
        done_calls = 1
        non2xx = 0
        started = time.monotonic()
        while done_calls < mode.memory_calls and time.monotonic() - started < budget_s:
            token_file = client.write_token_file(work / "memory-tokens.txt", int(rate * chunk_s * 1.5) + 500)
            result = wrk(port, SERVICE_PATH, body_file, token_file, 4, chunk_s)
            if "error" in result:
                return {"error": result["error"], "samples": samples}
            done_calls += result["responses"]
            non2xx += result["non2xx"]
            rate = max(rate, result["rps"])
            samples.append({"calls": done_calls, "rss_kib": servers.rss_kib(worker), "rps": result["rps"]})
            log(f"  {done_calls} calls, RSS {samples[-1]['rss_kib']} KiB, {result['rps']}/s")
        warm_rss = samples[1]["rss_kib"]
        final = samples[-1]["rss_kib"]
        return {
            "record": "small",
            "worker_pid": worker,
            "calls": done_calls,
            "non2xx": non2xx,
            "seconds": round(time.monotonic() - started, 1),
            "samples": samples,
            "rss_after_warmup_kib": warm_rss,
            "rss_final_kib": final,
            "rss_max_kib": max(s["rss_kib"] for s in samples[1:]),
            "growth_pct": round((final - warm_rss) / warm_rss * 100, 2),
        }
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def render(r: dict[str, Any], mode: Mode) -> str:
    m = r.get("machine", {})
    lines = [
        "# Benchmarks: osteoporosis-escalation (CDS Hooks 2.0, patient-view)",
        "",
        f"Generated by `benchmarks/run.sh{' --smoke' if mode.smoke else ''}` "
        f"({'SMOKE MODE: tiny counts, figures are not meaningful' if mode.smoke else 'full mode'}); "
        f"took {r.get('elapsed_s', '?')} s. Evaluation date (as_of) {r.get('as_of')}; records are generated "
        f"from seed {records.SEED} with dates relative to it.",
        "",
        "## Machine",
        "",
        f"- date: {m.get('date_utc')}; commit: `{m.get('commit')}`",
        f"- CPU: {m.get('cpu')}, {m.get('cores')} cores; memory {m.get('memory_gib')} GiB; "
        f"Linux {m.get('kernel')}; Python {m.get('python')}; {m.get('wrk') or 'wrk not installed'}",
        "- libraries: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
        "",
    ]
    inproc = r.get("inprocess", {})
    lines += [
        "## Settings",
        "",
        f"- auth active (a request without a token gets 401): in-process **{inproc.get('auth_active')}** "
        f"(status {inproc.get('status_without_token')}), HTTP **{r.get('http', {}).get('auth_active')}** "
        f"(status {r.get('http', {}).get('status_without_token')})",
        f"- card ledger active (a 200 adds rows to `card_ledger`): **{inproc.get('ledger_active')}**",
        "- environment: " + ", ".join(f"`{k}={v}`" for k, v in inproc.get("env", {}).items()),
        "- every request carries a distinct pre-minted ES384 JWT (kid, typ JWT; iss, sub, aud, iat, exp +5 min, jti)",
        "",
    ]
    rec = r.get("records", {})
    lines += [
        "## Records",
        "",
        "| size | request bytes | resources | validated (relevant, in the look-back windows) | what |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    what = {
        "small": "demo patient s01 (fhir_fixtures/demo), dates moved to as_of",
        "realistic": "10 years: 8 DXA scans, 150 medication records, 120 conditions, 400 labs",
        "heavy": "realistic + 1,000 vital signs + 400 more labs (every Observation)",
        "broad": "broad prefetch: same clinical core, ~95 % irrelevant resources",
    }
    for size, info in rec.items():
        lines.append(
            f"| {size} | {info['bytes']:,} | {info['resources']:,} | {info['validated']:,} | {what.get(size, '')} |"
        )
    lines += ["", "## 1. Service time vs the JSON floor (in-process, production settings)", ""]
    lines += [
        "Request bytes in -> response bytes out through the Flask app (WSGI call, no socket), auth and ledger "
        "on; floor = stdlib `json.loads(request) + json.dumps(response)` on the same bytes, measured in the "
        f"same loop, interleaved; {mode.calls} calls each (medians).",
        "",
        "| size | ours p50 | p90 | p99 | stdlib floor p50 | **ratio** | orjson floor p50 | floor app p50 | ours / floor app |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, s in inproc.get("sizes", {}).items():
        lines.append(
            f"| {size} | {s['ours']['p50_ms']:.2f} ms | {s['ours']['p90_ms']:.2f} | {s['ours']['p99_ms']:.2f} | "
            f"{s['stdlib_floor']['p50_ms']:.2f} ms | **{s['floor_ratio']:.2f}x** | {s['orjson_floor']['p50_ms']:.2f} ms | "
            f"{s['floor_app']['p50_ms']:.2f} ms | {s['floor_app_ratio']:.1f}x |"
        )
    heavy = inproc.get("sizes", {}).get("heavy")
    if heavy:
        lines += [
            "",
            f"Targets (heavy): ratio <= {TARGETS['heavy_floor_ratio']}x: {verdict(heavy['floor_ratio'] <= TARGETS['heavy_floor_ratio'])} "
            f"({heavy['floor_ratio']}x); p50 <= {TARGETS['heavy_p50_ms']} ms: "
            f"{verdict(heavy['ours']['p50_ms'] <= TARGETS['heavy_p50_ms'])} ({heavy['ours']['p50_ms']} ms).",
        ]
    variants = inproc.get("variants", {})
    if variants:
        lines += [
            "",
            "Variants (same calls, p50 ms). The `as_of` hint and the workers' GC tuning are now part of "
            "production (the production column has both); these columns re-apply them on top, so they show "
            "only noise, and `auth off` shows what client-JWT verification costs:",
            "",
            "| size | production | auth off | as_of hint | gc.freeze | as_of hint + gc.freeze |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for size, s in inproc.get("sizes", {}).items():
            row = [
                f"{variants[v][size]['p50_ms']:.2f}"
                for v in ("auth_off", "as_of_hint", "gc_freeze", "as_of_hint+gc_freeze")
            ]
            lines.append(f"| {size} | {s['ours']['p50_ms']:.2f} | " + " | ".join(row) + " |")
        if heavy:
            best = variants["as_of_hint+gc_freeze"]["heavy"]["p50_ms"]
            lines += [
                "",
                f"Heavy with both re-applied: {best} ms p50, {best / heavy['stdlib_floor']['p50_ms']:.2f}x the floor.",
            ]
    sc = r.get("scaling")
    if sc:
        ok = sc["time_ratio_per_10x_resources"] <= TARGETS["linear_time_ratio"]
        lines += [
            "",
            "## 2. Scaling with record size",
            "",
            f"`scale-5` ({sc['scale-5']['resources']:,} resources, {sc['scale-5']['bytes']:,} B): p50 {sc['scale-5']['p50_ms']} ms; "
            f"`scale-50` ({sc['scale-50']['resources']:,} resources, {sc['scale-50']['bytes']:,} B): p50 {sc['scale-50']['p50_ms']} ms. "
            f"{sc['resource_ratio']}x the resources took {sc['time_ratio']}x the time "
            f"({sc['time_ratio_per_10x_resources']}x per 10x). Target <= 11x per 10x: {verdict(ok)}.",
        ]
    fh = r.get("fhir")
    if fh:
        later = fh.get("later_calls") or {}
        ok = (
            later.get("p50_ms", fh["first_call_ms"]) <= TARGETS["fhir_path_ms"]
            and fh["first_call_ms"] <= TARGETS["fhir_path_ms"]
        )
        lines += [
            "",
            "## 3. FHIR path (no prefetch)",
            "",
            f"Local stub answering every request (including `/metadata` and next pages) after {fh['delay_ms']:.0f} ms; "
            f"the realistic record, searches paged at {fh['page_size']} entries (labs need a second page). "
            f"First call (metadata not yet cached): {fh['first_call_ms']} ms. "
            f"Later calls: p50 {later.get('p50_ms')} ms, max {later.get('max_ms')} ms. "
            f"Statuses {fh['statuses']}. Target <= 250 ms (two sequential rounds): {verdict(ok)}.",
            "",
            "The 412-before-release ordering and the next call being served are asserted by "
            "`tests/test_benchmarks_smoke.py::test_stuck_fhir_server_gets_412_before_release`.",
        ]
    http = r.get("http", {})
    if http:
        stack_ready = (
            f"; stack floor {http['stack_floor_ready_s']} s" if "stack_floor_ready_s" in http else ""
        )
        lines += ["", "## 4. HTTP", "", f"Ready after spawn: cds-service serve {http.get('ours_ready_s')} s "
                  f"(target <= 3 s: {verdict(http.get('ours_ready_s', 99) <= TARGETS['ready_s'])}); floor app {http.get('floor_ready_s')} s{stack_ready}.", ""]  # fmt: skip
        if "stack_floor_status_without_token" in http:
            lines += [
                "Stack floor (`benchmarks/stack_floor_app.py`): the floor app plus the work the fixed stack makes "
                "mandatory (PyJWT ES384 verification of the client JWT with its jti remembered, fhir.resources "
                "validation of exactly the entries the service validates, picked by position); no clinical logic. "
                f"A request without a token gets {http['stack_floor_status_without_token']}.",
                "",
            ]
        hc = http.get("healthchain", {})
        lines += [
            "Sequential calls on one keep-alive connection (client-side latency, p50 ms); peers as a ratio to ours:",
            "",
            "| size | ours | floor app (same gunicorn settings) | floor / ours | stack floor | stack floor / ours | HealthChain 0.16.1 (uvicorn) | HealthChain / ours |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for size, s in http.get("ours_sequential", {}).items():
            fl = http.get("floor_sequential", {}).get(size, {})
            stack_seq = http.get("stack_floor_sequential", {}).get(size)
            stack_text = f"{stack_seq['p50_ms']:.2f} {stack_seq['statuses']}" if stack_seq else "-"
            stack_ratio = f"{stack_seq['p50_ms'] / s['p50_ms']:.2f}x" if stack_seq else "-"
            h = (hc.get("sequential") or {}).get(size, {})
            h_text = f"{h['p50_ms']:.2f} {h['statuses']}" if h else hc.get("error", "-")[:80]
            h_ratio = f"{h['p50_ms'] / s['p50_ms']:.2f}x" if h else "-"
            lines.append(
                f"| {size} | {s['p50_ms']:.2f} {s['statuses']} | {fl.get('p50_ms', 0):.2f} | "
                f"{fl.get('p50_ms', 0) / s['p50_ms']:.2f}x | {stack_text} | {stack_ratio} | {h_text} | {h_ratio} |"
            )
        if hc.get("error"):
            lines += ["", f"HealthChain could not be measured: {hc['error']}"]
        ow, fw = http.get("ours_wrk"), http.get("floor_wrk")
        stack_wrk = http.get("stack_floor_wrk")
        if ow:
            lines += [
                "",
                f"wrk, realistic record ({rec.get('realistic', {}).get('bytes', 0):,} B), 2 workers, one wrk thread, "
                f"{mode.wrk_seconds} s per run, a distinct token per request; each load ran on ours, then at once on the "
                "floor app"
                + (", then on the stack floor (all three" if stack_wrk else " (both")
                + " servers up side by side):",
                "",
                "| run | server | calls/s | p50 | p90 | p99 | max | non-2xx | socket errors | token reuses |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for key in [f"c{connections}" for connections in WRK_CONNECTIONS]:
                rows = [("ours", ow.get(key)), ("floor app", (fw or {}).get(key))]
                if stack_wrk:
                    rows.append(("stack floor", stack_wrk.get(key)))
                for name, data in rows:
                    if not data or "error" in data:
                        lines.append(f"| {key} | {name} | error: {(data or {}).get('error', '-')[:60]} |")
                        continue
                    errors = (
                        data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]
                    )
                    lines.append(
                        f"| {key} | {name} | {data['rps']} | {data['p50_ms']} | {data['p90_ms']} | {data['p99_ms']} | "
                        f"{data['max_ms']} | {data['non2xx']} | {errors} | {data['token_wraps']} |"
                    )
            c4, c16 = ow.get("c4", {}), ow.get("c16", {})
            if "p99_ms" in c4 and "rps" in c16:
                lines += [
                    "",
                    f"Targets: 4 connections p99 <= 50 ms: {verdict(c4['p99_ms'] <= TARGETS['wrk_c4_p99_ms'])} ({c4['p99_ms']} ms); "
                    f"16 connections >= 250 calls/s with zero non-2xx: "
                    f"{verdict(c16['rps'] >= TARGETS['wrk_c16_rps'] and c16['non2xx'] == 0)} ({c16['rps']}/s, {c16['non2xx']} non-2xx).",
                ]
                if fw and "rps" in fw.get("c16", {}):
                    lines.append(
                        f"Floor app / ours: {fw['c16']['rps'] / c16['rps']:.1f}x the calls/s at 16 connections, "
                        f"ours / floor app {c4['p99_ms'] / fw['c4']['p99_ms']:.1f}x the p99 at 4."
                    )
                stack_c4, stack_c16 = (stack_wrk or {}).get("c4", {}), (stack_wrk or {}).get("c16", {})
                if "p99_ms" in stack_c4 and "rps" in stack_c16:
                    lines.append(
                        f"The stack floor itself (the fixed stack's mandatory work, no clinical logic): "
                        f"{stack_c4['p99_ms']} ms p99 at 4 connections (target {TARGETS['wrk_c4_p99_ms']:g} ms: "
                        f"{'within reach' if stack_c4['p99_ms'] <= TARGETS['wrk_c4_p99_ms'] else 'out of reach on this run'}), "
                        f"{stack_c16['rps']} calls/s at 16 (target {TARGETS['wrk_c16_rps']:g}: "
                        f"{'within reach' if stack_c16['rps'] >= TARGETS['wrk_c16_rps'] else 'out of reach on this run'}); "
                        f"ours / stack floor {c4['p99_ms'] / stack_c4['p99_ms']:.1f}x the p99 at 4, "
                        f"stack floor / ours {stack_c16['rps'] / c16['rps']:.1f}x the calls/s at 16."
                    )
    mem = r.get("memory")
    if mem:
        lines += ["", "## 5. Memory", ""]
        if "error" in mem:
            lines.append(f"Not measured: {mem['error']}")
        else:
            ok = abs(mem["growth_pct"]) <= TARGETS["rss_growth_pct"]
            lines += [
                f"One gunicorn worker (`cds-service serve --workers 1`, production settings), {mem['calls']:,} calls of "
                f"the small record by wrk (4 connections, fresh tokens per chunk), {mem['seconds']} s, {mem['non2xx']} non-2xx. "
                f"Worker RSS: {mem['rss_after_warmup_kib']:,} KiB after warm-up, {mem['rss_final_kib']:,} KiB at the end, "
                f"max {mem['rss_max_kib']:,} KiB: {mem['growth_pct']:+.2f} %. Target within 10 %: {verdict(ok)}.",
                "",
                "Samples (calls: RSS KiB): "
                + ", ".join(f"{s['calls']:,}: {s['rss_kib']:,}" for s in mem["samples"]),
            ]
    lines += ["", "Raw figures: `benchmarks/results.json`, written by the same run.", ""]
    lines.append(NOTES)
    return "\n".join(lines)


NOTES = """
## How these figures are made

- One command: `benchmarks/run.sh` (full, about 30 minutes on 2 cores; installs Debian's `wrk` if absent and
  HealthChain 0.16.1 into `benchmarks/.venv-peers`, a venv of its own: it requires fhir.resources < 8.2, this
  service pins 8.3.0). `benchmarks/run.sh --smoke` runs every phase with tiny counts in about 30 s;
  `tests/test_benchmarks_smoke.py` (CI) runs the in-process phases and the FHIR path that way, without timing
  assertions. `.venv/bin/python -m benchmarks.run --render benchmarks/results.json` re-writes this file.
- Loopback only (127.0.0.1); every loop is bounded in count and in time; every process started is stopped by pid.
- Production settings: `CDS_AUTH_MODE=required`, a trusted-issuers YAML naming a JWKS file of an ES384 key the
  benchmark generates, `CDS_PUBLIC_BASE_URL`, SQLite ledger (`CDS_DATABASE_URL`); each call carries its own
  pre-minted token (minted outside the timed region; wrk cycles a token file large enough that no token is
  reused: see "token reuses").
- In-process: `benchmarks.harness.WsgiCaller` calls the Flask app with a WSGI environ around the exact request
  bytes and joins the response body; the stdlib floor (`json.loads(request)` + `json.dumps(response)`), the
  orjson floor and the floor app are timed in the same loop, interleaved with our calls.
- Peers: the floor app (`benchmarks/floor_app.py`: Flask, `orjson.loads` of the body, one constant card) runs
  under `cds_service.gunicorn_conf.gunicorn_options` (gevent, 2 workers, no keep-alive), like `cds-service serve`.
  HealthChain runs its documented patient-view hook (`CdsFhirAdapter().parse` of the prefetch into
  fhir.resources R4B objects, one card, no clinical logic) under uvicorn, as `healthchain serve` starts it.
- Stack floor: `benchmarks/stack_floor_app.py`, under the same gunicorn settings (2 workers), is the floor app
  plus the work the design card's fixed stack makes mandatory on every call, and nothing else: the client JWT
  verified with PyJWT (ES384, public key loaded once; `iss`, `aud`, `exp`, `iat`, `jti` required) and its
  `jti` kept in an in-memory set per worker (a replay gets 401); `orjson.loads` of the body; fhir.resources R4B
  validation of exactly the entries the service validates for that record, the way it validates them
  (`parse._validate_entry`: the elements the protocol reads, lenient dates, element values shared within a
  call). Which entries is decided once at start-up by the service's own prefetch walk and `parse_resources`
  (same as_of), as positions in the body; each call picks them by position (type and id checked, 400 for a
  body it was not started with). No filtering, relevance, extraction, rules, card rendering, ledger or fair
  queue: the gap between it and ours is what the service adds to the stack.
- FHIR path: `benchmarks/fhir_stub.py` in its own process serves the realistic record, 300 entries per page
  (labs need a next page), every request (including `/metadata` and next pages) after 100 ms.
- Memory: `cds-service serve --workers 1`, wrk in 30 s chunks (fresh tokens each) until the call count is
  reached; RSS of the worker from /proc after each chunk.

## What limits the rest

See "Issue 14" below for the profile (top five costs), the worker model and the scale-out figures.
"""


if __name__ == "__main__":
    sys.exit(main())
