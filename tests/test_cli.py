"""`cds-service` command line: serve start-up validation, gunicorn wiring, offline evaluate."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service import cli
from cds_service.config import Settings, load_settings
from cds_service.core.errors import InvalidBundle
from cds_service.gunicorn_conf import bind_address, gunicorn_options, worker_timeout_s
from cds_service.knowledge.schema import KnowledgeError
from tests.support import leak_guard


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CDS_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """The CLI configures root logging (force=True); put the test runner's handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def no_gunicorn(monkeypatch: pytest.MonkeyPatch) -> list[cli.GunicornApplication]:
    started: list[cli.GunicornApplication] = []

    def record(application: cli.GunicornApplication) -> None:
        started.append(application)

    monkeypatch.setattr(cli.GunicornApplication, "run", record)
    return started


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("cds-service: ")
    return lines[0]


# --- serve -----------------------------------------------------------------------------------


def test_serve_with_invalid_setting_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_gunicorn: list[Any]
) -> None:
    monkeypatch.setenv("CDS_PORT", "eighty")
    assert cli.main(["serve"]) == 2
    captured = capsys.readouterr()
    assert "CDS_PORT" in one_line(captured.err)
    assert captured.out == ""
    assert no_gunicorn == []


@pytest.mark.parametrize(
    ("flags", "variable"),
    [(["--port", "0"], "CDS_PORT"), (["--workers", "0"], "CDS_WORKERS"), (["--host", ""], "CDS_HOST")],
)
def test_serve_flags_are_validated_like_settings(
    capsys: pytest.CaptureFixture[str], no_gunicorn: list[Any], flags: list[str], variable: str
) -> None:
    assert cli.main(["serve", *flags]) == 2
    assert variable in one_line(capsys.readouterr().err)
    assert no_gunicorn == []


@pytest.mark.parametrize("error", [KnowledgeError("invalid knowledge file k.yaml: thresholds: missing")])
def test_serve_with_invalid_knowledge_exits_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_gunicorn: list[Any],
    error: Exception,
) -> None:
    def broken_app(settings: Settings) -> Flask:
        raise error

    monkeypatch.setattr(cli, "create_app", broken_app)
    assert cli.main(["serve"]) == 2
    assert one_line(capsys.readouterr().err) == f"cds-service: {error}"
    assert no_gunicorn == []


def test_serve_runs_gunicorn_with_the_app_factory(
    monkeypatch: pytest.MonkeyPatch, no_gunicorn: list[cli.GunicornApplication]
) -> None:
    built: list[Settings] = []

    def app_factory(settings: Settings) -> Flask:
        built.append(settings)
        return Flask("fake")

    monkeypatch.setattr(cli, "create_app", app_factory)
    monkeypatch.setenv("CDS_FHIR_DEADLINE_S", "20")
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "9001", "--workers", "3"]) == 0
    (application,) = no_gunicorn
    assert len(built) == 1, "the app is built once before forking, to fail fast"
    config = application.cfg
    assert config.bind == ["0.0.0.0:9001"]
    assert config.workers == 3
    # slow clients cost a greenlet, not a worker thread
    assert config.worker_class_str == "cds_service.workers.gevent_worker.OperationOutcomeGeventWorker"
    assert config.threads == 4
    assert config.timeout == 80
    assert config.preload_app is False
    assert config.accesslog is None
    assert isinstance(application.load(), Flask)
    assert len(built) == 2 and built[1].port == 9001


def test_gunicorn_options() -> None:
    options = gunicorn_options(load_settings({"CDS_HOST": "::1", "CDS_WORKERS": "5"}))
    assert options["bind"] == ["[::1]:8000"]
    assert options["workers"] == 5
    assert options["worker_class"].endswith("OperationOutcomeGeventWorker")
    assert options["worker_connections"] == 1000
    gthread = gunicorn_options(load_settings({"CDS_WORKER_CLASS": "gthread"}))
    assert gthread["worker_class"].endswith("OperationOutcomeThreadWorker") and gthread["threads"] == 4
    assert options["preload_app"] is False
    assert options["graceful_timeout"] > 0
    assert "%(q)s" not in options["access_log_format"] and "%(r)s" not in options["access_log_format"]
    # gunicorn's control socket would be created under a home the image's user does not have, on a
    # read-only root filesystem (deploy/helm): it is switched off.
    assert options["control_socket_disable"] is True


def test_worker_timeout_stays_above_the_deadline() -> None:
    assert worker_timeout_s(2.0) == 30
    assert worker_timeout_s(12.5) == 50
    assert bind_address("127.0.0.1", 80) == "127.0.0.1:80"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


GUNICORN_SCRIPT = textwrap.dedent(
    """
    from cds_service.app import create_app
    from cds_service.present.card_model import HookResponse
    from cds_service.cli import GunicornApplication
    from cds_service.config import load_settings
    from cds_service.gunicorn_conf import gunicorn_options

    class Fake:
        service_id = "osteoporosis-escalation"
        def descriptor(self):
            return {"id": self.service_id, "hook": "patient-view", "description": "d"}
        def handle(self, request, auth, turn=None):
            return HookResponse([])
        def protocol_version(self):
            return "test"

    settings = load_settings()
    GunicornApplication(lambda: create_app(settings, Fake()), gunicorn_options(settings)).run()
    """
)


def test_gunicorn_serves_the_app_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CDS_PORT": str(port),
        "CDS_WORKERS": "1",
        "CDS_AUTH_MODE": "off",
        "CDS_DATA_DIR": str(tmp_path),
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen([sys.executable, "-c", GUNICORN_SCRIPT], env=env, stdout=log, stderr=log)
    try:
        body = wait_for_health(f"http://127.0.0.1:{port}/healthz", process)
        assert body["status"] == "ok" and body["protocol_version"] == "test"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/cds-services/osteoporosis-escalation",
            data=json.dumps(
                {
                    "hook": "patient-view",
                    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                    "context": {"patientId": "1", "userId": "Practitioner/1"},
                }
            ).encode(),
            headers={"Content-Type": "application/json", "Origin": "http://localhost:3000"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response) == {"cards": []}
            assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
    output = (tmp_path / "gunicorn.log").read_text()
    leak_guard.scan("gunicorn process output", output)
    assert process.returncode == 0, output


def wait_for_health(url: str, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn exited early"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return json.load(response)  # type: ignore[no-any-return]
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not answer /healthz")


def test_console_script_reports_invalid_setting(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "cds-service"
    if not script.exists():
        pytest.skip("console script not installed (pip install -e .)")
    env = {**os.environ, "CDS_PORT": "-1"}
    result = subprocess.run(
        [script, "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "CDS_PORT" in one_line(result.stderr)


# --- evaluate --------------------------------------------------------------------------------


BUNDLE = {"resourceType": "Bundle", "type": "collection", "entry": []}
DECISION = {"outcome": "escalate", "as_of": "2024-06-30", "agents": [{"code": "teriparatide", "rank": 1}]}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, date | None, Settings]]:
    """A stand-in for cds_service.offline recording its calls."""
    calls: list[tuple[Any, date | None, Settings]] = []

    def evaluate_bundle(bundle_json: Any, as_of: date | None, settings: Settings) -> dict[str, Any]:
        calls.append((bundle_json, as_of, settings))
        if bundle_json.get("resourceType") != "Bundle":
            raise InvalidBundle("input is not a FHIR Bundle")
        return DECISION

    module = types.ModuleType("cds_service.offline")
    module.evaluate_bundle = evaluate_bundle  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cds_service.offline", module)
    return calls


@pytest.fixture
def bundle_file(tmp_path: Path) -> Path:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(BUNDLE))
    return path


def test_evaluate_prints_only_the_decision(
    offline: list[Any], bundle_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["evaluate", str(bundle_file), "--as-of", "2024-06-30"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == DECISION
    ((bundle, as_of, _settings),) = offline
    assert bundle == BUNDLE
    assert as_of == date(2024, 6, 30)


def test_evaluate_reads_standard_input(
    offline: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(BUNDLE).encode())))
    assert cli.main(["evaluate", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == DECISION
    assert offline[0][0] == BUNDLE


def test_as_of_flag_beats_the_setting(
    offline: list[Any], bundle_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDS_AS_OF", "2023-01-01")
    assert cli.main(["evaluate", str(bundle_file), "--as-of", "2024-06-30"]) == 0
    assert offline[0][1] == date(2024, 6, 30)


def test_as_of_setting_beats_today(
    offline: list[Any], bundle_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDS_AS_OF", "2023-01-01")
    assert cli.main(["evaluate", str(bundle_file)]) == 0
    assert offline[0][1] == date(2023, 1, 1)
    assert offline[0][2].as_of == date(2023, 1, 1)


def test_as_of_defaults_to_today_in_utc(offline: list[Any], bundle_file: Path) -> None:
    before = datetime.now(UTC).date()
    assert cli.main(["evaluate", str(bundle_file)]) == 0
    assert before <= offline[0][1] <= datetime.now(UTC).date()


def test_invalid_bundle_exits_2(
    offline: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "patient.json"
    path.write_text('{"resourceType": "Patient"}')
    assert cli.main(["evaluate", str(path)]) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err) == "cds-service: input is not a FHIR Bundle"
    assert captured.out == ""


@pytest.mark.parametrize("content", ["{not json", "", "\xff"])
def test_unreadable_json_exits_2(
    offline: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content.encode("latin-1"))
    assert cli.main(["evaluate", str(path)]) == 2
    captured = capsys.readouterr()
    assert "not valid JSON" in one_line(captured.err)
    assert captured.out == ""
    assert offline == []


def test_missing_file_exits_2(offline: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["evaluate", str(tmp_path / "absent.json")]) == 2
    assert "cannot read" in one_line(capsys.readouterr().err)


def test_invalid_as_of_flag_is_a_usage_error(offline: list[Any], bundle_file: Path) -> None:
    assert cli.main(["evaluate", str(bundle_file), "--as-of", "30/06/2024"]) == 2
    assert offline == []


def test_evaluate_with_invalid_setting_exits_2(
    offline: list[Any], bundle_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDS_AS_OF", "tomorrow")
    assert cli.main(["evaluate", str(bundle_file)]) == 2
    assert "CDS_AS_OF" in one_line(capsys.readouterr().err)


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_help_exits_0() -> None:
    assert cli.main(["--help"]) == 0


def test_workers_tune_the_garbage_collector() -> None:
    import gc

    options = gunicorn_options(load_settings({"CDS_AUTH_MODE": "off"}))
    hook = options["post_worker_init"]
    before = gc.get_threshold()
    try:
        hook(None)
        assert gc.get_threshold()[0] == 50_000
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.parametrize(
    "case",
    [
        ({"CDS_AUTH_MODE": "required"}, "CDS_TRUSTED_ISSUERS"),
        ({"CDS_AUTH_MODE": "required", "CDS_TRUSTED_ISSUERS": "/nonexistent/issuers.yaml"}, "issuers"),
        ({"CDS_AUTH_MODE": "dev", "CDS_PROT": "8001"}, "CDS_PORT"),
    ],
)
def test_refused_start_up_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_gunicorn: list[Any],
    tmp_path: Path,
    case: tuple[dict[str, str], str],
) -> None:
    """Start-up checks run before the database is migrated or a secret is generated."""
    env, mentions = case
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("CDS_DATA_DIR", str(data_dir))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["serve"]) == 2
    assert mentions in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in data_dir.iterdir()) == []
    assert no_gunicorn == []
