"""Local CDS Hooks sandbox recipe (`make sandbox`): the service plus a CORS-enabled loopback FHIR server.

Starts, on loopback:
  * the FHIR R4 server the integration tests use (tests/fhir_server/server.mjs: Medplum's in-memory router
    behind Node) with FHIR_CORS=1, so a browser sandbox on any origin can read it;
  * the service through the same `cds-service serve` as production, with CDS_AUTH_MODE=dev and
    CDS_AS_OF=2025-06-01 (like `make run`), and the local sandbox's origin added to CDS_CORS_ORIGINS.
Then loads one demo patient per protocol outcome and per warning (DEMOS), derived at load time from the
committed scenario Bundles in fhir_fixtures/scenarios/ (those files are never changed), prints the URLs
to open the CDS Hooks sandbox with, and runs until Ctrl-C or SIGTERM, which stops both processes.

    python tools/sandbox.py [--fhir-port 8090] [--service-port 8000] [--sandbox-url http://localhost:8080]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import requests

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
SCENARIOS_DIR: Final = REPO_ROOT / "fhir_fixtures" / "scenarios"
FHIR_SERVER_DIR: Final = REPO_ROOT / "tests" / "fhir_server"
HOST: Final = "127.0.0.1"
DEFAULT_AS_OF: Final = "2025-06-01"
SERVICE_ID: Final = "osteoporosis-escalation"
PUBLIC_SANDBOX: Final = "https://sandbox.cds-hooks.org"
DEFAULT_LOCAL_SANDBOX: Final = "http://localhost:8080"
DESCRIPTION_URL: Final = "https://osteo-cds.example.org/fhir/StructureDefinition/sandbox-demo-description"
FHIR_JSON: Final = "application/fhir+json"
READY_LINE: Final = "Sandbox ready. Ctrl-C stops both processes."


@dataclass(frozen=True)
class Demo:
    """One demo patient: a committed scenario, what it demonstrates, and its expected decision."""

    scenario: str  # the committed Bundle fhir_fixtures/scenarios/<scenario>.json
    label: str  # Patient.name family: "Demo <SHOWS> <label>" in the sandbox's patient list
    shows: str  # the outcome or warning this patient is named for
    outcome: str
    warnings: tuple[str, ...] = ()
    description: str = ""
    patient_id: str = ""  # default: the scenario's own Patient id
    alive: bool = False  # derived variant: Patient.deceased[x] removed

    @property
    def id(self) -> str:
        return self.patient_id or self.scenario

    @property
    def name(self) -> str:
        return f"Demo {self.shows} {self.label}"


# One patient per outcome of the protocol and one per warning, checked by tests/test_sandbox_recipe.py
# against the running service. No committed scenario raises DENOSUMAB_OVERDUE (s55's overdue dose is
# masked by its death, NOT_APPLICABLE), so that demo is s55 alive, under its own id.
DEMOS: Final[tuple[Demo, ...]] = (
    Demo(
        "s01", "Alendronate", "ESCALATE", "ESCALATE", (), "Alendronate 3+ years, hip and spine targets missed"
    ),
    Demo("s20", "FRAX only", "CONSIDER", "CONSIDER", (), "High risk by FRAX only, T-scores above -2.5"),
    Demo("s02", "Targets met", "RESPONSE_MET", "RESPONSE_MET", (), "Alendronate, both targets met"),
    Demo(
        "s22",
        "Low risk",
        "NOT_ELIGIBLE_NOT_HIGH_RISK",
        "NOT_ELIGIBLE_NOT_HIGH_RISK",
        (),
        "Not high risk",
    ),
    Demo(
        "s43",
        "Raloxifene",
        "NOT_ELIGIBLE_NO_FIRST_LINE",
        "NOT_ELIGIBLE_NO_FIRST_LINE",
        (),
        "Raloxifene only, no first-line therapy",
    ),
    Demo(
        "s07",
        "Two years",
        "NOT_ELIGIBLE_DURATION",
        "NOT_ELIGIBLE_DURATION",
        (),
        "Only two years of alendronate",
    ),
    Demo(
        "s09",
        "Dispensing gap",
        "NOT_ELIGIBLE_ADHERENCE",
        "NOT_ELIGIBLE_ADHERENCE",
        (),
        "Fourteen-month gap in alendronate dispensing",
    ),
    Demo(
        "s31",
        "Vertebral fractures",
        "VERY_HIGH_RISK_PATHWAY",
        "VERY_HIGH_RISK_PATHWAY",
        (),
        "Two vertebral fractures",
    ),
    Demo("s39", "Renal", "SPECIALIST_REVIEW", "SPECIALIST_REVIEW", (), "eGFR 25"),
    Demo("s19", "No DXA", "INSUFFICIENT_DATA", "INSUFFICIENT_DATA", (), "No baseline DXA"),
    Demo("s27", "Age 46", "NOT_APPLICABLE", "NOT_APPLICABLE", (), "Woman aged 46"),
    Demo(
        "s28",
        "Teriparatide",
        "ON_ANABOLIC",
        "ON_ANABOLIC",
        (),
        "On teriparatide since January after four years of alendronate",
    ),
    Demo(
        "s52",
        "No follow-on",
        "ANABOLIC_FOLLOW_ON_MISSING",
        "SPECIALIST_REVIEW",
        ("ANABOLIC_FOLLOW_ON_MISSING",),
        "Teriparatide course finished a year ago, no antiresorptive follow-on",
    ),
    Demo(
        "s55",
        "Late injection",
        "DENOSUMAB_OVERDUE",
        "NOT_ELIGIBLE_DURATION",
        ("DENOSUMAB_OVERDUE",),
        "Denosumab injection overdue (scenario s55, alive)",
        patient_id="s55alive",
        alive=True,
    ),
)


def demo_bundle(demo: Demo) -> dict[str, Any]:
    """The scenario's transaction Bundle with the demo name and description on its Patient (a copy)."""
    original = json.loads((SCENARIOS_DIR / f"{demo.scenario}.json").read_text(encoding="utf-8"))
    bundle: dict[str, Any] = copy.deepcopy(original)
    if demo.id != demo.scenario:
        bundle = _renamed(bundle, demo.scenario, demo.id)
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    if len(patients) != 1 or patients[0]["id"] != demo.id:
        raise ValueError(f"{demo.scenario}: expected one Patient with id {demo.id!r}")
    patient = patients[0]
    if demo.alive:
        patient.pop("deceasedBoolean", None)
        patient.pop("deceasedDateTime", None)
    patient["name"] = [
        {"use": "usual", "text": demo.name, "family": demo.label, "given": ["Demo", demo.shows]}
    ]
    description = f"Demonstrates {demo.shows}: {demo.description} (scenario {demo.scenario})"
    patient["extension"] = [
        *[x for x in patient.get("extension", []) if x.get("url") != DESCRIPTION_URL],
        {"url": DESCRIPTION_URL, "valueString": description},
    ]
    return bundle


def _renamed(bundle: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """Every id and reference of patient `old` (Patient/s55, s55-obs-1, ...) renamed to `new`."""
    pattern = re.compile(rf'(?<=["/]){re.escape(old)}(?=["/-])')
    text = pattern.sub(new, json.dumps(bundle))
    if pattern.search(text):
        raise ValueError(f"{old} still referenced after renaming")
    renamed: dict[str, Any] = json.loads(text)
    return renamed


def load_demos(fhir_base: str, session: requests.Session | None = None) -> None:
    """POST each demo's transaction Bundle; raises when the server refuses one."""
    http = session or requests.Session()
    for demo in DEMOS:
        response = http.post(
            fhir_base + "/",
            data=json.dumps(demo_bundle(demo)),
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            timeout=60,
        )
        body = response.json() if response.content else {}
        failed = [
            e.get("response", {})
            for e in body.get("entry", [])
            if not str(e.get("response", {}).get("status", "")).startswith("2")
        ]
        if response.status_code != 200 or failed:
            raise RuntimeError(
                f"loading demo {demo.id} failed: HTTP {response.status_code}: {response.text[:300]}"
            )


@dataclass(frozen=True)
class Urls:
    fhir_base: str
    discovery: str
    public_sandbox: str
    local_sandbox: str

    def sandbox(self, base: str, patient_id: str | None = None) -> str:
        query = {"fhirServiceUrl": self.fhir_base, "serviceDiscoveryURL": self.discovery}
        if patient_id is not None:
            query["patientId"] = patient_id
        return f"{base.rstrip('/')}/?{urlencode(query)}"


def sandbox_urls(fhir_port: int, service_port: int, local_sandbox: str) -> Urls:
    return Urls(
        fhir_base=f"http://{HOST}:{fhir_port}",
        discovery=f"http://{HOST}:{service_port}/cds-services",
        public_sandbox=PUBLIC_SANDBOX,
        local_sandbox=local_sandbox,
    )


def banner(urls: Urls) -> str:
    lines = [
        "",
        f"FHIR R4 base URL (CORS: any origin): {urls.fhir_base}",
        f"CDS Hooks discovery URL:             {urls.discovery}",
        f"Public sandbox:  {urls.sandbox(urls.public_sandbox)}",
        f"Local sandbox:   {urls.sandbox(urls.local_sandbox)}",
        "",
        f"Demo patients (clinical date {os.environ.get('CDS_AS_OF') or DEFAULT_AS_OF}):",
    ]
    width = max(len(d.id) for d in DEMOS)
    for demo in DEMOS:
        expected = " + ".join((demo.outcome, *demo.warnings))
        lines.append(f"  {demo.id:<{width}}  {demo.name}  ->  {expected}")
        lines.append(f"  {'':<{width}}  {urls.sandbox(urls.public_sandbox, demo.id)}")
    lines += ["", READY_LINE]
    return "\n".join(lines)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def service_environ(
    base: Mapping[str, str],
    service_port: int,
    sandbox_origin: str,
    data_dir: Path | None,
    workers: int | None,
) -> dict[str, str]:
    """The service's environment: dev auth, the demo date, loopback, the local sandbox origin allowed."""
    environ = dict(base)
    environ["CDS_AUTH_MODE"] = "dev"
    environ["CDS_AS_OF"] = environ.get("CDS_AS_OF") or DEFAULT_AS_OF
    environ["CDS_HOST"] = HOST
    environ["CDS_PORT"] = str(service_port)
    extra = [o for o in environ.get("CDS_CORS_ORIGINS", "").split(",") if o.strip()]
    environ["CDS_CORS_ORIGINS"] = ",".join(dict.fromkeys([*extra, sandbox_origin]))
    if data_dir is not None:
        environ["CDS_DATA_DIR"] = str(data_dir)
    if workers is not None:
        environ["CDS_WORKERS"] = str(workers)
    return environ


def find_node() -> Path:
    """The Node 22 binary of the pinned npm package `node` (installed by `make npm`)."""
    modules = FHIR_SERVER_DIR / "node_modules"
    for candidate in (modules / "node" / "bin" / "node", modules / ".bin" / "node"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"no Node binary in {modules}: run `make npm`")


def find_cds_service() -> str:
    beside = Path(sys.executable).parent / "cds-service"
    if beside.is_file():
        return str(beside)
    found = shutil.which("cds-service")
    if found is None:
        raise RuntimeError("cds-service not found: run `make venv`")
    return found


def start_fhir_server(port: int, timeout: float = 60.0) -> tuple[subprocess.Popen[str], int]:
    """server.mjs with CORS on; returns the process and the port it reports once listening."""
    process = subprocess.Popen(  # noqa: S603 - fixed argv, our own files
        [str(find_node()), "server.mjs", str(port)],
        cwd=FHIR_SERVER_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "FHIR_CORS": "1", "NODE_ENV": "production"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                if process.poll() is not None:
                    break
                continue
            line = process.stdout.readline()
            if not line:
                break
            try:
                return process, int(json.loads(line)["port"])
            except (ValueError, KeyError, TypeError):
                continue
    stop(process)
    raise RuntimeError("the FHIR server did not report its port (see its output above)")


def start_service(environ: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - fixed argv
        [find_cds_service(), "serve"], stdin=subprocess.DEVNULL, env=dict(environ), text=True
    )


def wait_until_answering(url: str, process: subprocess.Popen[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode} (see its output above)")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop(process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


class _Stop(Exception):
    """SIGINT or SIGTERM received."""


def _on_stop_signal(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


@contextmanager
def running(processes: list[subprocess.Popen[str]]) -> Iterator[None]:
    """Stops every process in `processes` (in reverse start order) on the way out, however it is left."""
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the shutdown short
            signal.signal(signum, signal.SIG_IGN)
        for process in reversed(processes):
            stop(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fhir-port", type=int, default=int(os.environ.get("SANDBOX_FHIR_PORT", "8090")))
    parser.add_argument("--service-port", type=int, default=int(os.environ.get("CDS_PORT", "8000")))
    parser.add_argument(
        "--sandbox-url",
        default=os.environ.get("SANDBOX_URL", DEFAULT_LOCAL_SANDBOX),
        help="where a locally built CDS Hooks sandbox runs (its origin is added to CDS_CORS_ORIGINS)",
    )
    parser.add_argument("--data-dir", type=Path, help="CDS_DATA_DIR for the service (default: its own)")
    parser.add_argument("--workers", type=int, help="CDS_WORKERS for the service")
    args = parser.parse_args(argv)

    # Both set explicitly: a shell that starts us in the background leaves SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_stop_signal)
    processes: list[subprocess.Popen[str]] = []
    try:
        with running(processes):
            fhir, fhir_port = start_fhir_server(args.fhir_port)
            processes.append(fhir)
            urls = sandbox_urls(fhir_port, args.service_port, args.sandbox_url)
            load_demos(urls.fhir_base)
            environ = service_environ(
                os.environ, args.service_port, origin_of(args.sandbox_url), args.data_dir, args.workers
            )
            service = start_service(environ)
            processes.append(service)
            wait_until_answering(f"http://{HOST}:{args.service_port}/healthz", service)
            print(banner(urls), flush=True)
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
            name, exited = next(
                (n, p)
                for n, p in zip(("FHIR server", "service"), processes, strict=True)
                if p.poll() is not None
            )
            print(f"sandbox: the {name} exited with code {exited.returncode}; stopping", file=sys.stderr)
            return 1
    except _Stop:
        print("sandbox: stopped", file=sys.stderr)
        return 0
    except (RuntimeError, ValueError, OSError, requests.RequestException) as error:
        print(f"sandbox: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
