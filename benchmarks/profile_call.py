"""Where one hook call spends its time: cProfile over in-process calls (production settings), by stage.

    .venv/bin/python -m benchmarks.profile_call [--size heavy] [--calls 30]
    .venv/bin/python -m benchmarks.profile_call --parsers   # request JSON: stdlib vs orjson vs msgspec

Prints each stage's share of the call (cumulative time of the function that does it; cProfile inflates
small Python functions more than C code, so shares, not absolute times, are the figures to read) and the
top functions by own time. Loopback only: no server, no socket (the app is called through WSGI).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import pstats
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import records
from benchmarks.auth import make_client
from benchmarks.harness import WsgiCaller, build_app

# (label, file suffix, function name): the function whose cumulative time is the stage's cost.
STAGES = (
    ("whole call (Flask app)", "cds_service/wire/api.py", "call_service"),
    ("request JSON parse (orjson.loads of the body)", "cds_service/wire/api.py", "_read_json_body"),
    ("client JWT check (ES384) + replay-store insert", "cds_service/wire/auth/jwt_verify.py", "authenticate"),
    ("prefetch checks (Bundle entries, DSTU2 signs)", "cds_service/gather/prefetch.py", "resolve_prefetch"),
    ("parse: filter + validation", "cds_service/facts/parse.py", "parse_resources"),
    ("  of which fhir.resources validation", "cds_service/facts/parse.py", "_validated"),
    ("  of which relevance checks (codes)", "cds_service/facts/relevance.py", "is_relevant"),
    ("  of which lab look-back skip checks", "cds_service/facts/lab_window.py", "never_read"),
    ("  of which flatten + de-duplicate + patient scope", "cds_service/facts/triage.py", "collect_kept"),
    ("extract facts (FHIR -> facts)", "cds_service/facts/extract.py", "extract_record"),
    ("card ledger insert", "cds_service/wire/api.py", "_ledger_cards"),
)


def compare_parsers(calls: int) -> dict[str, dict[str, float]]:
    """Median ms to decode each record's request bytes into Python objects, parsers interleaved per call.

    msgspec is not a dependency of the service: measured when importable (e.g. `pip install msgspec` into a
    scratch directory on PYTHONPATH), else reported absent."""
    import json  # noqa: PLC0415
    import statistics  # noqa: PLC0415
    import time  # noqa: PLC0415

    import orjson  # noqa: PLC0415

    decoders: dict[str, Any] = {"stdlib json": json.loads, "orjson": orjson.loads}
    try:
        import msgspec  # noqa: PLC0415

        decoders[f"msgspec {msgspec.__version__}"] = msgspec.json.Decoder().decode
    except ImportError:
        print("msgspec not importable: only stdlib json and orjson are compared")
    out: dict[str, dict[str, float]] = {}
    for size in ("realistic", "heavy"):
        body = records.request_bytes(size, dt.datetime.now(dt.UTC).date())
        times: dict[str, list[float]] = {name: [] for name in decoders}
        for _ in range(calls):
            for name, decode in decoders.items():
                started = time.perf_counter()
                decode(body)
                times[name].append(time.perf_counter() - started)
        out[size] = {name: round(1000 * statistics.median(values), 2) for name, values in times.items()}
        print(f"{size} ({len(body):,} B) p50 ms: {out[size]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="heavy", choices=records.SIZES)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--parsers", action="store_true", help="compare JSON parsers on the request bytes")
    args = parser.parse_args(argv)
    if args.parsers:
        compare_parsers(args.calls)
        return 0
    work = Path(tempfile.mkdtemp(prefix="cds-profile-"))
    client = make_client(work, "http://127.0.0.1:8000")
    call = WsgiCaller(build_app(client.environ()))
    body = records.request_bytes(args.size, dt.datetime.now(dt.UTC).date())
    for _ in range(3):
        call(body, client.token())
    tokens = [client.token() for _ in range(args.calls)]
    profile = cProfile.Profile()
    profile.enable()
    for token in tokens:
        status, _ = call(body, token)
        assert status == 200, status
    profile.disable()
    stats = pstats.Stats(profile)
    table = stats.stats  # type: ignore[attr-defined]
    whole = None
    print(f"{args.size} record, {len(body):,} bytes, {args.calls} calls under cProfile")
    for label, suffix, name in STAGES:
        cumulative = sum(
            v[3] for (path, _, func), v in table.items() if path.endswith(suffix) and func == name
        )
        whole = whole or cumulative
        print(
            f"  {label:<52} {100 * cumulative / whole:5.1f} %  ({1000 * cumulative / args.calls:.1f} ms/call)"
        )
    stats.sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
