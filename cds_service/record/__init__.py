"""What the service records: card ledger, feedback, JWT replay store, database, metrics."""
