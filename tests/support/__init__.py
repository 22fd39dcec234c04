"""Shared test helpers: FHIR fixture loading, CDS Hooks request building, the test FHIR server."""
