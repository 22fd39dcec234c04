"""Operator metrics: counters, bounded labels, exposition, multiprocess aggregation and the gunicorn hooks."""

from __future__ import annotations

import multiprocessing
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
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import values as prometheus_values
from prometheus_client.parser import text_string_to_metric_families

from cds_service.config import load_settings
from cds_service.core.errors import BadRequest, DataUnavailable, NotR4Server
from cds_service.gunicorn_conf import MetricsDirHooks, clear_metrics_dir, gunicorn_options
from cds_service.present.card_model import Card, Source
from cds_service.record import metrics as metrics_module
from cds_service.record.metrics import (
    MULTIPROC_ENV,
    Metrics,
    auth_reason_label,
    card_kind,
    endpoint_label,
    fhir_fetch_result,
    instrument_app,
    outcome_label,
    rule_label,
    status_label,
)
from tests.support import leak_guard


@pytest.fixture(autouse=True)
def single_process_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset during each test and restored afterwards, also when a hook under test sets it."""
    monkeypatch.setenv(MULTIPROC_ENV, "")  # records the original value (or its absence) for the undo
    monkeypatch.delenv(MULTIPROC_ENV)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, (name, labels)
    return found


def families(exposition: bytes) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(exposition.decode())}


def sample_sum(exposition: bytes, sample_name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


# --- single-process mode ---------------------------------------------------------------------------


def typed_card(kind: str) -> Card:
    return Card("u-1", "summary", "info", Source("label"), kind=kind)


def test_counters_move_in_single_process_mode() -> None:
    metrics = Metrics()
    metrics.observe_request("/cds-services/osteoporosis-escalation", 200, 0.04)
    metrics.observe_request("/cds-services/osteoporosis-escalation", 412, 1.5)
    metrics.observe_request("/healthz", 200, 0.001)
    metrics.record_decision("ESCALATE", "R12")
    metrics.record_decision("ESCALATE", "R12")
    metrics.record_cards([typed_card("DENOSUMAB_OVERDUE")])
    metrics.record_fhir_fetch("ok", keys_fetched=3)
    metrics.record_fhir_fetch("not_r4")
    metrics.record_auth_refusal("expired")
    metrics.record_ledger_write_failure()
    metrics.record_feedback("accepted", 2)
    metrics.record_feedback("overridden", 0)

    total = "cds_http_requests_total"
    assert value(metrics, total, endpoint="service", status="200") == 1
    assert value(metrics, total, endpoint="service", status="412") == 1
    assert value(metrics, total, endpoint="healthz", status="200") == 1
    duration = "cds_http_request_duration_seconds"
    assert value(metrics, f"{duration}_count", endpoint="service") == 2
    assert value(metrics, f"{duration}_bucket", endpoint="service", le="0.05") == 1
    assert value(metrics, f"{duration}_bucket", endpoint="service", le="2.0") == 2
    assert value(metrics, f"{duration}_sum", endpoint="service") == pytest.approx(1.54)
    assert value(metrics, "cds_decisions_total", outcome="ESCALATE", rule="R12") == 2
    assert value(metrics, "cds_cards_total", kind="DENOSUMAB_OVERDUE") == 1
    assert value(metrics, "cds_cards_total", kind="ESCALATE") == 0  # pre-created at 0
    assert value(metrics, "cds_fhir_fetches_total", result="ok") == 1
    assert value(metrics, "cds_fhir_fetches_total", result="not_r4") == 1
    assert value(metrics, "cds_fhir_fetches_total", result="unavailable") == 0
    assert value(metrics, "cds_prefetch_keys_fetched_total") == 3
    assert value(metrics, "cds_auth_refusals_total", reason="expired") == 1
    assert value(metrics, "cds_auth_refusals_total", reason="replay") == 0
    assert value(metrics, "cds_ledger_write_failures_total") == 1
    assert value(metrics, "cds_feedback_entries_total", outcome="accepted") == 2
    assert value(metrics, "cds_feedback_entries_total", outcome="overridden") == 0


def test_instances_are_independent() -> None:
    first, second = Metrics(), Metrics()
    first.record_ledger_write_failure()
    assert value(first, "cds_ledger_write_failures_total") == 1
    assert value(second, "cds_ledger_write_failures_total") == 0


def test_render_parses_as_prometheus_text() -> None:
    metrics = Metrics()
    metrics.observe_request("/cds-services", 200, 0.01)
    metrics.record_decision("NOT_APPLICABLE", "R0")
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=")
    found = families(body)
    expected = {
        "cds_http_requests": "counter",
        "cds_http_request_duration_seconds": "histogram",
        "cds_decisions": "counter",
        "cds_cards": "counter",
        "cds_fhir_fetches": "counter",
        "cds_prefetch_keys_fetched": "counter",
        "cds_auth_refusals": "counter",
        "cds_ledger_write_failures": "counter",
        "cds_feedback_entries": "counter",
    }
    assert {name: found[name].type for name in expected} == expected
    assert sample_sum(body, "cds_decisions_total", outcome="NOT_APPLICABLE", rule="R0") == 1


def test_module_render_uses_this_process_metrics() -> None:
    metrics_module.get_metrics().record_decision("SPECIALIST_REVIEW", "R7h")
    body, _ = metrics_module.render()
    assert sample_sum(body, "cds_decisions_total", outcome="SPECIALIST_REVIEW", rule="R7h") >= 1
    assert metrics_module.get_metrics() is metrics_module.get_metrics()


# --- bounded labels --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/cds-services", "discovery"),
        ("/cds-services/", "discovery"),
        ("/cds-services/osteoporosis-escalation", "service"),
        ("/cds-services/anything-else", "service"),
        ("/cds-services/osteoporosis-escalation/feedback", "feedback"),
        ("/cds-services/osteoporosis-escalation/Patient/123", "other"),
        ("/cds-services//feedback", "other"),
        ("/healthz", "healthz"),
        ("/admin/feedback-report", "admin"),
        ("/metrics", "admin"),
        ("/Patient/8f2c1e", "other"),
        ("", "other"),
        ("/", "other"),
    ],
)
def test_endpoint_label_is_bounded(path: str, endpoint: str) -> None:
    assert endpoint_label(path) == endpoint


def test_unknown_label_values_become_other() -> None:
    assert auth_reason_label("bad_signature") == "bad_signature"
    assert auth_reason_label("Signature verification failed for kid abc") == "other"
    assert outcome_label("ON_ANABOLIC") == "ON_ANABOLIC"
    assert outcome_label("escalate") == "other"
    assert rule_label("R12") == "R12" and rule_label("R9a") == "R9a" and rule_label("R0b") == "R0b"
    assert rule_label("R12; DROP TABLE") == "other" and rule_label("") == "other"
    assert status_label(503) == "503" and status_label(0) == "other" and status_label(1000) == "other"
    assert card_kind(typed_card("SomethingNew")) == "other"
    assert card_kind(typed_card("CONSIDER")) == "CONSIDER"
    assert card_kind(typed_card("patient 123")) == "other"

    metrics = Metrics()
    metrics.record_auth_refusal("token for patient 123 expired")
    metrics.record_decision("made-up", "rule 7")
    metrics.record_feedback("maybe")
    assert value(metrics, "cds_auth_refusals_total", reason="other") == 1
    assert value(metrics, "cds_decisions_total", outcome="other", rule="other") == 1
    assert value(metrics, "cds_feedback_entries_total", outcome="other") == 1


def test_every_auth_reason_of_the_security_package_is_a_label() -> None:
    from typing import get_args

    from cds_service.core.security_errors import Reason

    assert set(get_args(Reason)) | {"other"} == set(metrics_module.AUTH_REASONS)
    assert len(metrics_module.AUTH_REASONS) == 16
    assert len(metrics_module.OUTCOMES) == 12


def test_fhir_fetch_result_of_errors() -> None:
    assert fhir_fetch_result(None) == "ok"
    assert fhir_fetch_result(NotR4Server("DSTU2")) == "not_r4"
    assert fhir_fetch_result(DataUnavailable("deadline")) == "unavailable"
    assert fhir_fetch_result(BadRequest("bad prefetch")) is None


# --- request middleware ----------------------------------------------------------------------------


def test_middleware_counts_every_request_without_raw_paths() -> None:
    app = Flask("metrics-test")

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.post("/cds-services/<service_id>")
    def call(service_id: str) -> tuple[str, int]:
        raise RuntimeError("boom")

    @app.errorhandler(RuntimeError)
    def failed(error: RuntimeError) -> tuple[str, int]:
        return "error", 500

    metrics = Metrics()
    instrument_app(app, lambda: metrics)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/Patient/secret-patient-id").status_code == 404
    assert client.post("/cds-services/osteoporosis-escalation").status_code == 500
    assert client.get("/cds-services/osteoporosis-escalation").status_code == 405

    total = "cds_http_requests_total"
    assert value(metrics, total, endpoint="healthz", status="200") == 1
    assert value(metrics, total, endpoint="other", status="404") == 1
    assert value(metrics, total, endpoint="service", status="500") == 1
    assert value(metrics, total, endpoint="service", status="405") == 1
    assert value(metrics, "cds_http_request_duration_seconds_count", endpoint="service") == 2
    body, _ = metrics.render()
    assert b"secret-patient-id" not in body and b"osteoporosis-escalation" not in body


# --- multiprocess mode -----------------------------------------------------------------------------


def _worker(decisions: int) -> None:
    """A forked worker: prometheus_client was imported before the variable was set, as under gunicorn."""
    metrics = metrics_module.get_metrics()
    for _ in range(decisions):
        metrics.record_decision("ESCALATE", "R12")
    metrics.observe_request("/cds-services/osteoporosis-escalation", 200, 0.03)
    metrics.record_fhir_fetch("ok", keys_fetched=decisions)


def test_render_sums_the_workers_in_multiprocess_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics_module.get_metrics()  # the parent's instance, created in single-process mode
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(n,)) for n in (3, 4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert len(list(tmp_path.glob("counter_*.db"))) == 2, "one counter file per worker"
    assert prometheus_values.ValueClass is prometheus_values.MutexValue, "the parent stays single-process"

    body, content_type = metrics_module.render()
    assert content_type.startswith("text/plain")
    assert "cds_decisions" in families(body)
    assert sample_sum(body, "cds_decisions_total", outcome="ESCALATE", rule="R12") == 7
    assert sample_sum(body, "cds_prefetch_keys_fetched_total") == 7
    assert sample_sum(body, "cds_fhir_fetches_total", result="ok") == 2
    assert sample_sum(body, "cds_http_requests_total", endpoint="service", status="200") == 2
    histogram = "cds_http_request_duration_seconds_bucket"
    assert sample_sum(body, histogram, endpoint="service", le="0.05") == 2
    assert sample_sum(body, histogram, endpoint="service", le="0.025") == 0


# --- gunicorn hooks ---------------------------------------------------------------------------------


def fake_server() -> Any:
    return types.SimpleNamespace(log=types.SimpleNamespace(info=lambda *args: None))


def test_on_starting_prepares_data_dir_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"stale")
    (directory / "README").write_text("kept")
    hooks = MetricsDirHooks(tmp_path)
    hooks.on_starting(fake_server())
    assert os.environ[MULTIPROC_ENV] == str(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["README"]
    (directory / "gauge_livesum_4242.db").write_bytes(b"")
    (directory / "counter_4242.db").write_bytes(b"")
    hooks.child_exit(fake_server(), types.SimpleNamespace(pid=4242))
    assert sorted(p.name for p in directory.iterdir()) == ["README", "counter_4242.db"]
    hooks.on_exit(fake_server())
    assert directory.is_dir(), "CDS_DATA_DIR/metrics is kept"


def test_on_starting_uses_a_temporary_dir_without_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = MetricsDirHooks(None)
    hooks.on_starting(fake_server())
    directory = Path(os.environ[MULTIPROC_ENV])
    assert directory.is_dir() and directory.name.startswith("cds-metrics-")
    assert (directory.stat().st_mode & 0o777) == 0o700
    hooks.on_exit(fake_server())
    assert not directory.exists()


def test_on_starting_honours_a_preset_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    preset = tmp_path / "shm-metrics"
    monkeypatch.setenv(MULTIPROC_ENV, str(preset))
    MetricsDirHooks(tmp_path / "data").on_starting(fake_server())
    assert preset.is_dir() and os.environ[MULTIPROC_ENV] == str(preset)
    assert not (tmp_path / "data").exists()
    assert clear_metrics_dir(preset) == 0


def test_gunicorn_options_carry_the_hooks(tmp_path: Path) -> None:
    options = gunicorn_options(load_settings({"CDS_DATA_DIR": str(tmp_path)}))
    assert {"on_starting", "child_exit", "on_exit"} <= set(options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


GUNICORN_SCRIPT = textwrap.dedent(
    """
    import os
    from flask import Flask, Response
    from cds_service.cli import GunicornApplication
    from cds_service.config import load_settings
    from cds_service.gunicorn_conf import gunicorn_options
    from cds_service.record import metrics

    def create():
        app = Flask("metrics-e2e")
        metrics.instrument_app(app)

        @app.get("/healthz")
        def healthz():
            return str(os.getpid())

        @app.get("/metrics")
        def scrape():
            body, content_type = metrics.render()
            return Response(body, content_type=content_type)

        return app

    settings = load_settings()
    GunicornApplication(create, gunicorn_options(settings)).run()
    """
)


@pytest.fixture
def gunicorn_two_workers(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("CDS_") and key != MULTIPROC_ENV
    }
    env |= {"CDS_PORT": str(port), "CDS_WORKERS": "2", "CDS_DATA_DIR": str(tmp_path)}
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-c", GUNICORN_SCRIPT], env=env, stdout=log, stderr=log)
        try:
            yield f"http://127.0.0.1:{port}", process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    output = log_path.read_text()
    leak_guard.scan("gunicorn process output", output)
    assert process.returncode == 0, output


def get(url: str) -> bytes:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bytes(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_gunicorn_workers_are_summed_across_restarts(
    gunicorn_two_workers: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Requests served by workers that were killed and by their replacements all appear in one scrape."""
    base, process = gunicorn_two_workers
    served = 20
    first_pids = {int(get(f"{base}/healthz")) for _ in range(served)}
    for pid in first_pids:  # idle workers; gunicorn forks replacements and runs child_exit
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() for pid in first_pids):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    later_pids = set()
    for _ in range(10):
        later_pids.add(int(get(f"{base}/healthz")))
        served += 1
    assert later_pids.isdisjoint(first_pids)

    body = get(f"{base}/metrics")
    assert sample_sum(body, "cds_http_requests_total", endpoint="healthz", status="200") == served
    assert sample_sum(body, "cds_http_request_duration_seconds_count", endpoint="healthz") == served
    files = list((tmp_path / "metrics").glob("counter_*.db"))
    assert len(files) >= len(first_pids) + 1, "the files of dead workers are kept"
    second = get(f"{base}/metrics")
    assert sample_sum(second, "cds_http_requests_total", endpoint="admin", status="200") >= 1
