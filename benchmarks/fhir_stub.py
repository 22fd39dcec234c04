"""A local FHIR R4 stub on 127.0.0.1 that answers every request after a fixed delay (or when released).

It serves one patient-view record (the `prefetch` of a request from benchmarks.records) as the
searches the service sends: `/metadata`, `Patient/<id>`, and one search per prefetch key; a search
with more than `page_size` entries is paged with same-origin `next` links. Every request, pages and
`/metadata` included, waits `delay_s` first; with a `gate`, it waits until the gate is set instead
(bounded by `gate_timeout_s`), which lets a test hold the FHIR server "stuck".
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

FHIR_JSON = "application/fhir+json"
_BY_TYPE = {
    "Condition": "conditions",
    "Procedure": "procedures",
    "AllergyIntolerance": "allergies",
    "MedicationStatement": "medicationStatements",
    "MedicationRequest": "medicationRequests",
    "MedicationAdministration": "medicationAdministrations",
    "MedicationDispense": "medicationDispenses",
}
_CAPABILITIES = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "kind": "instance",
    "fhirVersion": "4.0.1",
    "format": ["json"],
}
_DXA_MARKER = "38267-1"  # a code only in the dxa query's code list


class FhirStub:
    def __init__(
        self,
        request: dict[str, Any],
        *,
        delay_s: float = 0.1,
        page_size: int = 500,
        gate: threading.Event | None = None,
        gate_timeout_s: float = 30.0,
    ) -> None:
        prefetch = request["prefetch"]
        self.patient = prefetch["patient"]
        self.resources: dict[str, list[dict[str, Any]]] = {
            key: [entry["resource"] for entry in (value or {}).get("entry") or []]
            for key, value in prefetch.items()
            if key != "patient"
        }
        self.delay_s = delay_s
        self.page_size = page_size
        self.gate = gate
        self.gate_timeout_s = gate_timeout_s
        self.requests: list[tuple[float, str]] = []
        self.answered = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/fhir"

    def start(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                stub._record(self.path)
                if stub.gate is not None:
                    stub.gate.wait(stub.gate_timeout_s)
                else:
                    time.sleep(stub.delay_s)
                status, body = stub.answer(self.path)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", FHIR_JSON)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    return  # the client gave up (deadline): nothing to do
                with stub._lock:
                    stub.answered += 1

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fhir-stub")
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _record(self, path: str) -> None:
        with self._lock:
            self.requests.append((time.monotonic(), path))

    # -- answers -----------------------------------------------------------------------------------------
    def answer(self, path: str) -> tuple[int, bytes]:
        url = urlsplit(path)
        route = url.path.removeprefix("/fhir").strip("/")
        query = parse_qs(url.query)
        if route == "metadata":
            return 200, orjson.dumps(_CAPABILITIES)
        parts = route.split("/")
        if len(parts) == 2 and parts[0] == "Patient":
            return (200, orjson.dumps(self.patient)) if parts[1] == self.patient.get("id") else (404, b"{}")
        if len(parts) != 1:
            return 404, orjson.dumps({"resourceType": "OperationOutcome", "issue": []})
        key = query.get("_page_key", [None])[0] or self._key(parts[0], query)
        if key is None:
            return 200, orjson.dumps(self._bundle("x", [], 0, 0))
        offset = int(query.get("_page_offset", ["0"])[0])
        found = self.resources.get(key, [])
        return 200, orjson.dumps(self._bundle(key, found, offset, len(found)))

    def _key(self, rtype: str, query: dict[str, list[str]]) -> str | None:
        if rtype == "Observation":
            return "dxa" if _DXA_MARKER in query.get("code", [""])[0] else "labs"
        return _BY_TYPE.get(rtype)

    def _bundle(self, key: str, found: list[dict[str, Any]], offset: int, total: int) -> dict[str, Any]:
        page = found[offset : offset + self.page_size]
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total}
        if page:
            bundle["entry"] = [
                {"fullUrl": f"{self.base_url}/{r['resourceType']}/{r['id']}", "resource": r,
                 "search": {"mode": "match"}}
                for r in page
            ]  # fmt: skip
        if offset + self.page_size < total:
            rtype = page[0]["resourceType"]
            next_url = f"{self.base_url}/{rtype}?_page_key={key}&_page_offset={offset + self.page_size}"
            bundle["link"] = [{"relation": "next", "url": next_url}]
        return bundle


def main() -> None:
    """Serve a generated record from its own process (so the stub never competes for the service's GIL)."""
    import argparse  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from benchmarks import records  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="FHIR stub on 127.0.0.1 (prints its base URL)")
    parser.add_argument("--size", default="realistic")
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--page-size", type=int, default=300)
    parser.add_argument("--lifetime", type=float, default=1800.0, help="exit after this many seconds")
    args = parser.parse_args()
    stub = FhirStub(records.request_for(args.size), delay_s=args.delay, page_size=args.page_size)
    print(stub.start(), flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        stub.stop()


if __name__ == "__main__":
    main()
