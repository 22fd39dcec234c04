"""HTTP: routes, CDS Hooks wire models, client auth, one hook call's pipeline, OperationOutcome mapping,
and the SMART app's routes and sealed browser session."""
