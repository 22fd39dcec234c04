"""CDS Hooks 2.0 patient-view service for osteoporosis treatment escalation."""

__version__ = "0.1.0"
SERVICE_ID = "osteoporosis-escalation"
