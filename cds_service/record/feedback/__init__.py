"""CDS Hooks feedback: validation, the card ledger and feedback store, analytics and HTTP handlers."""
