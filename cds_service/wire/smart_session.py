"""The SMART app's browser session: one encrypted, HttpOnly cookie, nothing stored server-side.

Before the redirect to the EHR it holds the pending launch (state, PKCE verifier, iss, endpoints); after
the code exchange it holds the access token, the patient id, the card's decision id and an anti-forgery
token for the feedback form. Fernet (AES-CBC + HMAC-SHA256, `cryptography`) seals it; it expires with
the token or after CDS_SMART_SESSION_TTL_S, whichever comes first. The token never reaches the page, a
log line or the database, so several workers (and replicas sharing the key) serve one launch.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.fernet import Fernet, InvalidToken

from cds_service.record.feedback.patient_key import stored_secret

COOKIE_NAME: Final = "osteo_smart"
COOKIE_PATH: Final = "/smart/"
KEY_FILE: Final = "smart-session.key"
PENDING_TTL_S: Final = 600  # from the launch redirect to the callback


@dataclass(frozen=True)
class PendingLaunch:
    state: str
    code_verifier: str
    iss: str
    authorize: str
    token: str
    started: float


@dataclass(frozen=True)
class AppSession:
    iss: str
    access_token: str
    patient: str
    decision_id: str | None  # the card's uuid from appContext (feedback), None without a card
    card_patient: str | None  # the patient the card was issued for (from appContext)
    expires_at: float
    csrf: str


class SessionCodec:
    """Seal and open the session cookie; a tampered, foreign or expired cookie opens as None."""

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        key = base64.urlsafe_b64encode(hashlib.sha256(b"osteo-smart-session\x00" + secret).digest())
        self._fernet = Fernet(key)
        self._clock = clock

    def seal(self, value: PendingLaunch | AppSession) -> str:
        kind = "pending" if isinstance(value, PendingLaunch) else "app"
        payload = orjson.dumps({"kind": kind, **asdict(value)})
        return self._fernet.encrypt_at_time(payload, int(self._clock())).decode("ascii")

    def open(self, cookie: str | None, max_age_s: int) -> PendingLaunch | AppSession | None:
        if not cookie or len(cookie) > 8192:
            return None
        try:
            payload = self._fernet.decrypt_at_time(cookie.encode("ascii"), max_age_s, int(self._clock()))
            data: dict[str, Any] = orjson.loads(payload)
            kind = data.pop("kind")
            if kind == "pending":
                return PendingLaunch(**data)
            if kind == "app":
                return AppSession(**data)
        except (InvalidToken, ValueError, TypeError, KeyError, UnicodeEncodeError):
            return None
        return None

    def now(self) -> float:
        return self._clock()


def session_secret(data_dir: Path, configured: str | None) -> bytes:
    """CDS_SMART_SESSION_SECRET, else a key generated once in the data directory (shared by workers)."""
    if configured:
        return configured.encode("utf-8")
    return stored_secret(data_dir / KEY_FILE)
