"""HTTP: routes and the browser-facing session of the SMART app."""
