"""Obtaining one hook call's data: prefetch resolution, the FHIR client (deadline, paging, peer guard)."""
