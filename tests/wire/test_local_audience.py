"""The dev/off default audience follows the address the service listens on (CDS_HOST, CDS_PORT): before,
it was always http://127.0.0.1:8000, so a local run on any other port refused its own dev tokens (401)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_service.app import create_app
from cds_service.config import load_settings
from cds_service.wire.auth.dev_keys import mint_dev_token
from tests.support.fixtures import hook_request

PATH = "/cds-services/osteoporosis-escalation"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"CDS_PORT": "8123"}, "http://127.0.0.1:8123"),
        ({"CDS_HOST": "0.0.0.0", "CDS_PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"CDS_HOST": "localhost", "CDS_PORT": "9001"}, "http://localhost:9001"),
        ({"CDS_HOST": "::1", "CDS_PORT": "9002"}, "http://[::1]:9002"),
        ({"CDS_PORT": "8123", "CDS_PUBLIC_BASE_URL": "http://127.0.0.1:7000"}, "http://127.0.0.1:7000"),
    ],
)
def test_dev_audience_base_follows_host_and_port(env: dict[str, str], expected: str) -> None:
    settings = load_settings({"CDS_AUTH_MODE": "dev", **env})
    assert settings.trust().effective_base_url == expected


def test_required_mode_never_defaults_an_audience() -> None:
    settings = load_settings({"CDS_AUTH_MODE": "required", "CDS_PORT": "8123", "CDS_TRUSTED_ISSUERS": ""})
    assert settings.trust().effective_base_url is None


def test_dev_token_for_the_real_port_is_accepted(tmp_path: Path) -> None:
    settings = load_settings(
        {"CDS_AUTH_MODE": "dev", "CDS_PORT": "8123", "CDS_DATA_DIR": str(tmp_path), "CDS_AS_OF": "2025-06-01"}
    )
    client = create_app(settings).test_client()
    body = hook_request("s01", with_prefetch=True)

    def call(url: str) -> int:
        headers = {"Authorization": f"Bearer {mint_dev_token(tmp_path, url)}"}
        return client.post(PATH, json=body, headers=headers).status_code

    assert call(f"http://127.0.0.1:8123{PATH}") == 200
    assert call(f"http://localhost:8123{PATH}") == 200  # localhost == 127.0.0.1 in dev
    assert call(f"http://127.0.0.1:8000{PATH}") == 401  # the old fixed port is not this service
