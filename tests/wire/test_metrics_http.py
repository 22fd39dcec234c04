"""/admin/metrics through the real app: operator token only, and the counters reflect real calls."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cds_service.app import create_app
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

TOKEN = "metrics-operator-token-0001"
PATH = "/cds-services/osteoporosis-escalation"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_need_the_operator_token_and_count_decisions(tmp_path: Path) -> None:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    settings = test_settings(
        {"CDS_DATA_DIR": str(tmp_path), "CDS_AS_OF": "2025-06-01", "CDS_ADMIN_TOKEN_SHA256": digest}
    )
    client = create_app(settings).test_client()
    assert client.get("/admin/metrics").status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = samples(client.get("/admin/metrics", headers=auth).get_data(as_text=True))
    assert client.post(PATH, json=hook_request("s01", with_prefetch=True)).status_code == 200
    response = client.get("/admin/metrics", headers=auth)
    assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response.headers
    after = samples(response.get_data(as_text=True))
    key = ("cds_decisions_total", (("outcome", "ESCALATE"), ("rule", "R12")))
    assert after[key] == before.get(key, 0.0) + 1
    assert all("s01" not in str(labels) for _name, labels in after)  # no patient data in labels


def test_metrics_are_hidden_without_a_configured_token(tmp_path: Path) -> None:
    client = create_app(test_settings({"CDS_DATA_DIR": str(tmp_path)})).test_client()
    assert client.get("/admin/metrics").status_code == 404
