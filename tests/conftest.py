"""Shared fixtures: the real FHIR test server process (session scope)."""

from __future__ import annotations

from tests.support.fhir_server import fhir_server_fixture

__all__ = ["fhir_server_fixture"]
