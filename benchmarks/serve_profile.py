"""Where a call spends its time on the real serving path: py-spy samples a gevent worker under wrk load.

    .venv/bin/pip install py-spy        # a tool like wrk, not a dependency of the service (not in the lock)
    flock /tmp/machine.lock .venv/bin/python -m benchmarks.serve_profile --connections 4 --seconds 25

`cds-service serve` with production settings (benchmarks/auth.py: ES384 JWT per request, SQLite ledger and
replay store, 2 gevent workers), the realistic record, wrk at `--connections` with a fresh token per call;
py-spy records one worker (`--nonblocking`, 200 samples/s, raw stacks) for the whole wrk run. Prints wrk's
figures and the share of the samples in each stage (inclusive: the stage's function anywhere on the stack)
and the top functions by own samples. py-spy samples every thread of the worker: SQLite work runs in
gevent's thread pool, so a commit waiting for its fsync shows as `do_commit` time in that thread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks import records, servers
from benchmarks.auth import make_client
from benchmarks.run import SERVICE_PATH, wrk

# (label, function name as py-spy prints it): a stage's share is the samples with that function on the stack.
STAGES = (
    ("whole request (gunicorn handle)", "AsyncWorker.handle_request"),
    ("client JWT (ES384) + replay check", "ClientAuthenticator.authenticate"),
    ("request body read + orjson.loads", "_read_json_body"),
    ("service pipeline (prefetch -> cards)", "PatientViewService.handle"),
    ("  prefetch checks", "resolve_prefetch"),
    ("  parse: filters + validation", "parse_resources"),
    ("    fhir.resources validation", "_validated"),
    ("    relevance checks", "RelevanceChecker.is_relevant"),
    ("    lab look-back skip checks", "LabWindow.never_read"),
    ("    flatten + scope + de-duplicate", "collect_kept"),
    ("  extract facts", "extract_record"),
    ("  rules", "evaluate"),
    ("  cards", "render_cards"),
    ("SQLite work in the thread pool (replay, ledger)", "_WorkerGreenlet.run"),
    ("  of which commit (fsync with synchronous=FULL)", "DefaultDialect.do_commit"),
    ("gevent hub (idle loop, switches)", "Hub.run"),
)
_LINE = re.compile(r":\d+\)$")


def stage_shares(raw_file: Path) -> tuple[int, dict[str, float], list[tuple[str, float]]]:
    """Total samples, share per stage (percent) and the top 15 functions by own samples."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in raw_file.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        for name in {frame.split(" (", 1)[0] for frame in frames}:
            inclusive[name] += count
        own[frames[-1]] += count
    shares = {label: 100 * inclusive[name] / max(total, 1) for label, name in STAGES}
    top = [(name, 100 * count / max(total, 1)) for name, count in own.most_common(15)]
    return total, shares, top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks in this file")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="cds-serve-profile-"))
    client = make_client(work / "client", "http://127.0.0.1:8000")
    port = servers.free_port()
    server = servers.cds_service_server("cds-service", port, client.environ(), workers=args.workers)
    server.start(log_dir=work / "logs")
    body_file = work / "body.json"
    body_file.write_bytes(records.request_bytes("realistic", dt.datetime.now(dt.UTC).date()))
    raw_file = args.raw or work / "py-spy.txt"
    try:
        wrk(port, SERVICE_PATH, body_file, client.write_token_file(work / "warm.txt", 2000), 2, 3)
        tokens = client.write_token_file(work / "tokens.txt", 300 * args.seconds + 2000)
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(server.worker_pids()[0]), "--duration", str(args.seconds),
             "--rate", "200", "--format", "raw", "--output", str(raw_file), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = wrk(port, SERVICE_PATH, body_file, tokens, args.connections, args.seconds)
        spy.wait(timeout=args.seconds + 60)
    finally:
        server.stop()
    figures = ("rps", "p50_ms", "p90_ms", "p99_ms", "non2xx")
    print(f"wrk -c{args.connections} {args.seconds} s:", {key: result.get(key) for key in figures})
    total, shares, top = stage_shares(raw_file)
    print(f"py-spy: {total} samples of one worker ({raw_file})")
    for label, share in shares.items():
        print(f"  {label:52s} {share:5.1f} %")
    print("top functions by own samples:")
    for name, share in top:
        print(f"  {share:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
