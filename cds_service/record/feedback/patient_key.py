"""Keyed hash of a patient id (HMAC-SHA256), so the card ledger never holds an identifier in clear.

The key is `CDS_PATIENT_KEY_SECRET` when set (required for several replicas that do not share a data
directory), else a random key generated on first use in `<data dir>/patient-key.secret` (mode 0600).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

SECRET_FILE = "patient-key.secret"  # noqa: S105 - a file name, not a secret
MIN_SECRET_CHARS = 32
_GENERATED_BYTES = 32


class PatientKeyError(ValueError):
    """The configured or stored patient-key secret is unusable."""


class PatientKeyer:
    """Maps a patient id to a stable, non-reversible key (64 hex characters)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_CHARS // 2:
            raise PatientKeyError("the patient-key secret is too short")
        self._secret = secret

    def __call__(self, patient_id: str) -> str:
        return hmac.digest(self._secret, patient_id.encode("utf-8"), "sha256").hex()  # one C call

    def __repr__(self) -> str:
        return "PatientKeyer(<secret>)"


def load_patient_keyer(data_dir: Path, secret: str | None = None) -> PatientKeyer:
    """The keyer from `secret` (CDS_PATIENT_KEY_SECRET, at least 32 characters) or the data-dir file."""
    if secret is not None and secret != "":
        if len(secret) < MIN_SECRET_CHARS:
            raise PatientKeyError(f"CDS_PATIENT_KEY_SECRET must be at least {MIN_SECRET_CHARS} characters")
        return PatientKeyer(secret.encode("utf-8"))
    return PatientKeyer(stored_secret(data_dir / SECRET_FILE))


def stored_secret(path: Path) -> bytes:
    """Read the key file, creating it atomically (link of a complete 0600 temp file) if absent."""
    if not path.exists():
        _create_secret(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("%s is readable by group or others (mode %o); it should be 0600", path, mode)
    text = path.read_text(encoding="ascii").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise PatientKeyError(f"{path} does not hold a hex key") from None
    if len(secret) < MIN_SECRET_CHARS // 2:
        raise PatientKeyError(f"{path} holds a key that is too short")
    return secret


def _create_secret(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(_GENERATED_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process created it first: keep theirs
        except FileExistsError:
            pass
        else:
            logger.info("generated a new secret in %s", path)
    finally:
        temporary.unlink(missing_ok=True)
