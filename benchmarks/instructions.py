"""Instructions per hook call, deterministic: in-process calls counted by callgrind, nothing else.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --toggle-collect=starmap_next \\
        --callgrind-out-file=/tmp/cg.out .venv/bin/python -m benchmarks.instructions --calls 5
    callgrind_annotate /tmp/cg.out | head -n 30      # "PROGRAM TOTALS" / calls = instructions per call

The calls (and only they) run inside `itertools.starmap`, whose C iterator `starmap_next` is the toggle:
startup, app build, warm-up calls and token signing are not counted (neither the service nor its libraries
use starmap). Run the same command in two checkouts (main and a branch) to compare them: the counts do not
depend on the machine's load, unlike times on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import sys
import tempfile
from pathlib import Path

from benchmarks import records
from benchmarks.auth import make_client
from benchmarks.harness import WsgiCaller, build_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="realistic", choices=records.SIZES)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--warm", type=int, default=3, help="uncounted calls first (caches, lazy imports)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cds-instructions-"))
    client = make_client(work, "http://127.0.0.1:8000")
    call = WsgiCaller(build_app(client.environ()))
    body = records.request_bytes(args.size, dt.datetime.now(dt.UTC).date())
    for _ in range(args.warm):
        call(body, client.token())
    tokens = [(body, client.token()) for _ in range(args.calls)]
    statuses = list(itertools.starmap(call, tokens))  # counted: only these calls
    bad = [status for status, _ in statuses if status != 200]
    if bad:
        print(f"unexpected statuses: {bad}", file=sys.stderr)
        return 1
    print(f"{args.size} record, {len(body):,} bytes, {args.calls} counted calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
