"""Fixtures shared by the FHIR client and prefetch tests: a clean R4 metadata cache and a `responses` mock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses

from cds_service.gather.shared_http import clear_metadata_cache


@pytest.fixture(autouse=True, name="fresh_metadata_cache")
def fresh_metadata_cache_fixture() -> Iterator[None]:
    clear_metadata_cache()
    yield
    clear_metadata_cache()


@pytest.fixture(name="rsps")
def rsps_fixture() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
