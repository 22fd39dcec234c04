"""Application factory: wires settings, the CDS Service and the HTTP routes."""

from __future__ import annotations

import logging

from flask import Flask

from cds_service.config import Settings, operational_warnings
from cds_service.gather.capability import configure_capability_cache
from cds_service.gather.shared_http import configure_fhir_peer_guard
from cds_service.mpl_cache import use_prebuilt_font_cache
from cds_service.record.metrics import instrument_app
from cds_service.wire.api import create_blueprint
from cds_service.wire.hook_protocol import HookService
from cds_service.wire.runtime import Runtime, build_runtime

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings, service: HookService | None = None, runtime: Runtime | None = None
) -> Flask:
    """Build the Flask app; without `service`/`runtime`, build the real ones (fail fast on invalid
    knowledge, trusted-issuers file or database settings)."""
    if service is None:
        from cds_service.wire.service import build_service  # noqa: PLC0415 - tests pass a fake service

        service = build_service(settings)
    configure_fhir_peer_guard(
        max_calls_per_server=settings.fhir_max_calls_per_server,
        failure_threshold=settings.fhir_failure_threshold,
        open_s=settings.fhir_circuit_open_s,
    )
    configure_capability_cache(settings.fhir_capability_ttl_s)
    app = Flask(__name__)
    instrument_app(app)
    # One byte above the limit: werkzeug's stream refuses a read AT its limit (under gunicorn a body of
    # exactly CDS_MAX_BODY_BYTES got 413); api._read_json_body enforces the exact limit itself.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    runtime = runtime or build_runtime(settings)
    app.register_blueprint(create_blueprint(service, settings, runtime))
    if settings.smart_client_id:
        use_prebuilt_font_cache(settings.data_dir)  # before matplotlib is imported (mpl_cache.py)
        from cds_service.wire.service import PatientViewService  # noqa: PLC0415 - tests pass a fake service
        from cds_service.wire.smart_routes import create_smart_blueprint  # noqa: PLC0415 - loads matplotlib

        if isinstance(service, PatientViewService):
            app.register_blueprint(create_smart_blueprint(service, settings, runtime))
    for warning in operational_warnings(settings):
        logger.warning(warning)
    return app
