"""Obtaining data: prefetch resolution, the FHIR client (deadline, paging, peer guard), the SSRF guard,
and the SMART app's launch discovery and token exchange."""
