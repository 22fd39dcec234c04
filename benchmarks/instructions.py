"""Instructions per hook call, deterministic: in-process calls counted by callgrind, nothing else.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --toggle-collect=starmap_next \\
        --callgrind-out-file=/tmp/cg.out .venv/bin/python -m benchmarks.instructions --calls 5
    callgrind_annotate /tmp/cg.out | head -n 30      # "PROGRAM TOTALS" / calls = instructions per call

The calls (and only they) run inside `itertools.starmap`, whose C iterator `starmap_next` is the toggle:
startup, app build, warm-up calls and token signing are not counted (neither the service nor its libraries
use starmap). Run the same command in two checkouts (main and a branch) to compare them: the counts do not
depend on the machine's load, unlike times on a shared 2-core machine.

    ... valgrind --tool=callgrind --toggle-collect=starmap_next --dump-after=starmap_next \
        --callgrind-out-file=/tmp/st.out .venv/bin/python -m benchmarks.instructions --stages
    for f in $(ls /tmp/st.out.* | sort -t. -k3 -n); do grep -m1 '^summary:' $f; done

`--stages` calls the pipeline's stages instead (request JSON parse, prefetch checks, parse, fact extraction,
evaluation; each twice, then once more to end its iterator): one dump per call, in that order, with the same
inputs every time, so the figures repeat exactly (no signature or uuid differs between runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks import records
from benchmarks.auth import make_client
from benchmarks.harness import WsgiCaller, build_app


def stages(size: str) -> list[str]:
    """Each stage called twice inside `itertools.starmap` (counted); returns the stage names in order."""
    import orjson  # noqa: PLC0415

    from cds_service.facts.extract import extract_record  # noqa: PLC0415
    from cds_service.facts.parse import parse_resources  # noqa: PLC0415
    from cds_service.gather.prefetch import resolve_prefetch  # noqa: PLC0415
    from cds_service.knowledge.loader import packaged_knowledge  # noqa: PLC0415
    from cds_service.rules.protocol import evaluate  # noqa: PLC0415

    knowledge = packaged_knowledge()
    as_of = dt.datetime.now(dt.UTC).date()
    body = records.request_bytes(size, as_of)
    request = orjson.loads(body)
    patient_id = request["context"]["patientId"]
    templates = {key: "unused: every key is supplied" for key in request["prefetch"]}
    data = resolve_prefetch(templates, request["prefetch"], patient_id, None)
    resources = [resource for found in data.resources.values() for resource in found]
    parsed = parse_resources(resources, knowledge, as_of=as_of, patient_id=patient_id)
    facts = extract_record(parsed, knowledge, ())
    steps: list[tuple[str, Callable[[], object]]] = [
        ("request JSON parse", lambda: orjson.loads(body)),
        ("prefetch checks", lambda: resolve_prefetch(templates, request["prefetch"], patient_id, None)),
        ("parse", lambda: parse_resources(resources, knowledge, as_of=as_of, patient_id=patient_id)),
        ("extract facts", lambda: extract_record(parsed, knowledge, ())),
        ("evaluate", lambda: evaluate(facts, knowledge, as_of)),
    ]
    gc.collect()
    gc.freeze()  # as every worker does after loading the app
    try:
        for _, step in steps:
            step()  # warm, not counted
            list(itertools.starmap(step, [()] * 2))
    finally:
        gc.unfreeze()
    return [name for name, _ in steps]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="realistic", choices=records.SIZES)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--warm", type=int, default=3, help="uncounted calls first (caches, lazy imports)")
    parser.add_argument("--stages", action="store_true", help="count the pipeline's stages, not whole calls")
    args = parser.parse_args(argv)
    if args.stages:
        print("stages, each dumped twice then once empty:", ", ".join(stages(args.size)))
        return 0
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
