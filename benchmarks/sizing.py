"""Container sizing figures (loopback only): CPU time per hook call and memory per worker of
`cds-service serve`, the numbers behind the Helm chart's resource requests and limits.

CPU per call is the CPU time (user + system, /proc/PID/stat) of the gunicorn master and its workers
over a wrk run, divided by the calls answered: unlike calls/s it does not depend on what else runs on
the machine. Memory: VmRSS and PSS (/proc/PID/smaps_rollup; a container's memory use is close to the
sum of its processes' PSS, since forked workers share pages) of each process after the run, and the
peak RSS (VmHWM). The migration command (`cds-service db upgrade`) is measured the same way.

    .venv/bin/python -m benchmarks.sizing --database-url postgresql+psycopg://postgres@127.0.0.1/test \
        --seconds 30 --out benchmarks/sizing-results.json

With a PostgreSQL URL, a new schema is created for the run and dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.auth import make_client
from benchmarks.records import request_bytes
from benchmarks.run import SERVICE_PATH, wrk
from benchmarks.servers import VENV_BIN, cds_service_server, free_port

AS_OF = date(2026, 11, 30)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    status = {
        line.split(":")[0]: int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith(("VmRSS:", "VmHWM:"))
    }
    pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
    return {"rss_kib": status.get("VmRSS", 0), "peak_rss_kib": status.get("VmHWM", 0), "pss_kib": pss}


@contextlib.contextmanager
def fresh_schema(database_url: str | None) -> Iterator[str | None]:
    """A PostgreSQL URL whose search_path is a new schema (dropped afterwards); None stays None."""
    if database_url is None:
        yield None
        return
    schema = f"sizing_{uuid.uuid4().hex[:10]}"
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(database_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def migration(env: dict[str, str]) -> dict[str, Any]:
    """`cds-service db upgrade` on an empty database: wall time and peak RSS of the child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    done = subprocess.run(
        [str(VENV_BIN / "cds-service"), "db", "upgrade"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "exit_code": done.returncode,
        "seconds": round(time.monotonic() - started, 2),
        "peak_rss_kib": peak if peak > before else None,
        "output": (done.stdout + done.stderr).strip()[-300:],
    }


def run(database_url: str | None, seconds: int, workers: int, connections: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="cds-sizing-"))
    port = free_port()
    client = make_client(work, f"http://127.0.0.1:{port}")
    out: dict[str, Any] = {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "database": "postgresql" if database_url else "sqlite",
        "workers": workers,
        "worker_class": "gevent",
        "connections": connections,
        "seconds_per_record": seconds,
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
    }
    with fresh_schema(database_url) as url:
        env = client.environ(port=port)
        if url is not None:
            env["CDS_DATABASE_URL"] = url
        env["CDS_DB_AUTO_MIGRATE"] = "false"
        out["migration"] = migration(env)
        server = cds_service_server("sizing", port, env, workers=workers)
        server.start(log_dir=work / "logs")
        try:
            out["idle"] = processes(server)
            out["records"] = {
                size: one_record(server, client, work, size, seconds=seconds, connections=connections)
                for size in ("small", "realistic", "heavy")
            }
        finally:
            server.stop()
    out["load_average_after"] = os.getloadavg()
    return out


def processes(server: Any) -> dict[str, Any]:
    assert server.process is not None
    master = server.process.pid
    return {
        "master": memory_kib(master),
        "workers": [memory_kib(pid) for pid in server.worker_pids()],
    }


def one_record(
    server: Any, client: Any, work: Path, size: str, *, seconds: int, connections: int
) -> dict[str, Any]:
    body_file = work / f"{size}.json"
    body_file.write_bytes(request_bytes(size, AS_OF))
    token_file = client.write_token_file(work / "tokens.txt", 200 * seconds * connections + 1000)
    assert server.process is not None
    pids = [server.process.pid, *server.worker_pids()]
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    result = wrk(server.port, SERVICE_PATH, body_file, token_file, connections, seconds)
    cpu_used = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    calls = int(result.get("responses", 0))
    return {
        "request_bytes": body_file.stat().st_size,
        "calls": calls,
        "non_2xx": result.get("non2xx"),
        "calls_per_s": result.get("rps"),
        "p50_ms": result.get("p50_ms"),
        "p99_ms": result.get("p99_ms"),
        "cpu_s": round(cpu_used, 2),
        "cpu_ms_per_call": round(1000 * cpu_used / calls, 2) if calls else None,
        "calls_per_cpu_second": round(calls / cpu_used, 1) if cpu_used else None,
        "memory_after": processes(server),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temporary directory)")
    parser.add_argument("--seconds", type=int, default=30, help="wrk seconds per record size")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--out", type=Path, help="write the JSON figures here")
    args = parser.parse_args(argv)
    figures = run(args.database_url, args.seconds, args.workers, args.connections)
    text_out = json.dumps(figures, indent=2) + "\n"
    if args.out:
        args.out.write_text(text_out, encoding="utf-8")
    print(text_out, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
