"""Per-process infrastructure built from settings: database, card ledger and feedback store, JWT replay
store, client authenticator and the patient keyer. `create_app` builds it once per worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from cds_service.config import Settings
from cds_service.core.trust_settings import TrustSettings
from cds_service.record.db.degraded_replay import DegradableReplayStore
from cds_service.record.db.engine import database_url, make_engine
from cds_service.record.db.health import DatabaseHealth
from cds_service.record.db.migrate import is_initialised, upgrade
from cds_service.record.db.replay_store import DbReplayStore
from cds_service.record.db.retention import Retention
from cds_service.record.feedback.patient_key import PatientKeyer, load_patient_keyer
from cds_service.record.feedback.store import FeedbackStore
from cds_service.wire.auth.jwks import JwksRegistry
from cds_service.wire.auth.jwt_verify import ClientAuthenticator, build_authenticator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    engine: Engine
    store: FeedbackStore
    patient_key: PatientKeyer
    trust: TrustSettings
    authenticator: ClientAuthenticator
    db_health: DatabaseHealth = field(default_factory=DatabaseHealth)
    jwks: JwksRegistry = field(default_factory=JwksRegistry)


def build_runtime(settings: Settings) -> Runtime:
    """Raises DatabaseConfigError, SecurityConfigError or PatientKeyError on invalid configuration.

    The checks that need no writes (database URL, trust settings and issuers) run first, so a refused
    start-up leaves no database file, schema or generated secret behind."""
    engine = make_engine(database_url(settings.database_url, settings.data_dir))  # connects lazily
    trust = settings.trust()
    db_health = DatabaseHealth(retry_s=settings.db_retry_s)
    replay = DegradableReplayStore(
        DbReplayStore(engine),
        db_health,
        policy=settings.db_outage_policy,
        max_entries=settings.replay_window_max,
    )
    jwks = JwksRegistry()
    authenticator = build_authenticator(trust, replay, workers=settings.workers, registry=jwks)
    if settings.db_auto_migrate and not is_initialised(engine):
        # `cds-service serve` migrates before forking; this covers in-process use (tests, benchmarks).
        upgrade(engine)
    secret = settings.patient_key_secret.get_secret_value() if settings.patient_key_secret else None
    return Runtime(
        engine=engine,
        store=FeedbackStore(
            engine,
            retention=Retention(settings.ledger_retention_days, settings.feedback_retention_days),
        ),
        patient_key=load_patient_keyer(settings.data_dir, secret),
        trust=trust,
        authenticator=authenticator,
        db_health=db_health,
        jwks=jwks,
    )
