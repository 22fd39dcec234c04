"""First render of the SMART app's page on the benchmark records (no browser, no network).

Measures, in this fresh process: importing the app's page modules (matplotlib included: paid once at
worker start-up, as create_app imports them), then the first and the following renders of one record:
the hook's own parse -> facts -> decision (`PatientViewService.assess`), the view, both SVG charts, the
timeline and the HTML. The FHIR reads are not included: the hook's FHIR-path figures in BENCHMARKS.md
cover the same queries. Usage: python -m benchmarks.smart_render [--size heavy] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from benchmarks.records import request_for

AS_OF_ENV = "2026-11-30"  # the records' evaluation date (benchmarks/records.py)


def _resources(request: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for value in request["prefetch"].values():
        if not value:
            continue
        if value.get("resourceType") == "Bundle":
            out.extend(entry["resource"] for entry in value.get("entry", []))
        else:
            out.append(value)
    return out


def measure(size: str, repeat: int) -> dict[str, Any]:
    started = time.perf_counter()
    from cds_service.config import load_settings  # noqa: PLC0415 - the import is what is measured
    from cds_service.present.smart_page import PageLinks, render_app  # noqa: PLC0415
    from cds_service.present.smart_view import build_view  # noqa: PLC0415
    from cds_service.wire.service import build_service  # noqa: PLC0415

    imported_s = time.perf_counter() - started
    service = build_service(load_settings({"CDS_AS_OF": AS_OF_ENV}))
    request = request_for(size)
    resources = _resources(request)
    patient = request["context"]["patientId"]
    links = PageLinks("/smart/app.css", "/smart/feedback")

    def render() -> tuple[float, str, int]:
        begin = time.perf_counter()
        record, decision = service.assess(resources, patient, service.as_of())
        html = render_app(
            build_view(record, decision, service.knowledge),
            decision,
            service.knowledge,
            decision_id="bench",
            csrf="bench",
            feedback_sent=False,
            links=links,
        )
        return time.perf_counter() - begin, decision.outcome, len(html)

    first_s, outcome, size_bytes = render()
    warm = [render()[0] for _ in range(repeat)]
    return {
        "size": size,
        "resources": len(resources),
        "outcome": outcome,
        "html_bytes": size_bytes,
        "import_s": round(imported_s, 3),
        "first_render_s": round(first_s, 3),
        "warm_median_s": round(statistics.median(warm), 3) if warm else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="heavy", choices=("small", "realistic", "heavy", "broad"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    result = measure(args.size, args.repeat)
    print(" ".join(f"{key}={value}" for key, value in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
