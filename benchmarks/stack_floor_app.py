"""The fixed stack's floor: what the stack the design card mandates costs per call, with no clinical logic.

The floor app (benchmarks/floor_app.py) only parses the body. This app does, per request, the work that
the design card makes mandatory for any service on this stack, and nothing else:

- the CDS Hooks client JWT verified with PyJWT (ES384 public key loaded once, from the benchmark's JWKS
  file; `iss`, `aud`, `exp`, `iat` and `jti` required, issuer and audience checked) and its `jti`
  recorded in memory: a token seen before is refused with 401 (replay protection without a database, the
  cheapest correct form; one store per worker process, so run one worker to test replay over HTTP);
- `orjson.loads` of the body;
- fhir.resources R4B validation of exactly the entries the service validates for this record, the way
  it validates them (`cds_service.facts.parse._validate_entry`: the elements the protocol reads, lenient
  dates, element values shared between entries of one call), picked out of the fresh body by position;
- one constant card.

Which entries: decided once at start-up, outside the timed path, for each record given (`--record`,
evaluated at `--as-of`): the service's own prefetch walk and `parse_resources` run on it, and every
entry parse hands to validation is noted by its position in the body (prefetch key, entry index). A
request is matched to its record by byte length, then each noted entry's type and id are checked; a body
that matches no record is answered 400, so it can never pass as a cheap 200. No filtering, relevance,
extraction or rule runs per request.

Served by `python -m benchmarks.stack_floor_app` under exactly the gunicorn settings of `cds-service
serve`, like the floor app.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import jwt
import orjson
from flask import Flask, Response, request

from benchmarks.floor_app import SERVICE_PATH, constant_card
from cds_service.facts import parse
from cds_service.facts.patient_scope import scoped
from cds_service.gather.prefetch import build_prefetch_templates, resolve_prefetch
from cds_service.knowledge.indexed import Knowledge

ALGORITHM = "ES384"
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]
SWEEP_EVERY_S = 60.0
CARD = constant_card("00000000-0000-4000-8000-000000000001", "stack floor")
_JSON = "application/json"


# ---------------------------------------------------------------------------------------------------------
# Which entries production validates (start-up only)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    """One entry the service validates: where it sits in the request body, and how it is validated."""

    key: str  # prefetch key
    index: int | None  # position in that key's Bundle entries; None: the prefetch value is the resource
    resource_type: str
    resource_id: object
    shares_elements: bool  # validated with the call's shared element values (not the referenced types)


def validation_plan(body: bytes, knowledge: Knowledge, as_of: dt.date) -> tuple[Pick, ...]:
    """The entries the service validates for this request body, in its order (its own code decides)."""
    hook_request = orjson.loads(body)
    prefetch = hook_request["prefetch"]
    patient_id = hook_request["context"]["patientId"]
    positions: dict[int, tuple[str, int | None]] = {}
    for key, value in prefetch.items():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            for index, entry in enumerate(value.get("entry") or []):
                positions[id(entry.get("resource"))] = (key, index)
        elif isinstance(value, dict):
            positions[id(value)] = (key, None)
    templates = build_prefetch_templates(knowledge.dxa_codes(), knowledge.lab_codes())
    data = resolve_prefetch(templates, prefetch, patient_id, None)  # what the service does, in its order
    resources = [resource for found in data.resources.values() for resource in found]
    validated: list[Any] = []
    real_validate = parse._validate_entry

    def noted(entry: Any) -> Any:
        validated.append(entry)
        return real_validate(entry)

    with mock.patch.object(parse, "_validate_entry", noted):
        parse.parse_resources(scoped(resources, patient_id), knowledge, as_of=as_of)
    picks = []
    for entry in validated:
        key, place = positions[id(entry.resource)]  # KeyError: the walk no longer hands out body objects
        picks.append(Pick(key, place, entry.resource_type, entry.resource.get("id"), entry.reuse is not None))
    return tuple(picks)


def validate_picked(plan: Sequence[Pick], hook_request: Mapping[str, Any]) -> bool:
    """Validate the planned entries of a fresh body as the service does; False if the body does not fit."""
    prefetch = hook_request.get("prefetch")
    if not isinstance(prefetch, dict):
        return False
    shared = parse._Reuse()
    for number, pick in enumerate(plan):
        try:
            value = prefetch[pick.key]
            resource = value if pick.index is None else value["entry"][pick.index]["resource"]
        except (KeyError, IndexError, TypeError):
            return False
        if (
            not isinstance(resource, dict)
            or resource.get("resourceType") != pick.resource_type
            or resource.get("id") != pick.resource_id
        ):
            return False
        # An entry that fails is counted as unreadable by the service, not refused: the same here.
        parse._validate_entry(parse._Entry(number, None, resource, shared if pick.shares_elements else None))
    return True


# ---------------------------------------------------------------------------------------------------------
# Client JWT: verified, jti remembered
# ---------------------------------------------------------------------------------------------------------


class JtiSet:
    """The jtis seen by this process until their token expires; a second use of one is a replay."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._expires: dict[str, float] = {}
        self._clock = clock
        self._next_sweep = 0.0

    def first_use(self, jti: str, expires: float) -> bool:
        now = self._clock()
        if now >= self._next_sweep:
            self._expires = {key: exp for key, exp in self._expires.items() if exp > now}
            self._next_sweep = now + SWEEP_EVERY_S
        if jti in self._expires:
            return False
        self._expires[jti] = expires
        return True


class TokenCheck:
    """PyJWT verification of the benchmark client's tokens with one public key, loaded once."""

    def __init__(self, jwks_file: Path, issuer: str, audience: str) -> None:
        keys = orjson.loads(jwks_file.read_bytes())["keys"]
        self._key = jwt.PyJWK(keys[0], algorithm=ALGORITHM).key
        self._issuer = issuer
        self._audience = audience
        self._seen = JtiSet()

    def accepts(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        try:
            claims = jwt.decode(
                token.strip(),
                self._key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError:
            return False
        jti, expires = claims["jti"], claims["exp"]
        return isinstance(jti, str) and bool(jti) and self._seen.first_use(jti, float(expires))


# ---------------------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------------------


def plans_by_length(
    bodies: Iterable[bytes], knowledge: Knowledge, as_of: dt.date
) -> dict[int, tuple[Pick, ...]]:
    plans: dict[int, tuple[Pick, ...]] = {}
    for body in bodies:
        if len(body) in plans:
            raise ValueError(f"two records of {len(body)} bytes: a request could not be told apart")
        plans[len(body)] = validation_plan(body, knowledge, as_of)
    return plans


def create_stack_floor_app(tokens: TokenCheck, plans: Mapping[int, Sequence[Pick]]) -> Flask:
    app = Flask(__name__)

    @app.post(SERVICE_PATH)
    def call() -> Response:
        if not tokens.accepts(request.headers.get("Authorization")):
            return Response(b'{"error":"unauthorized"}', status=401, mimetype=_JSON)
        body = request.get_data()
        try:
            hook_request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Response(b"{}", status=400, mimetype=_JSON)
        plan = plans.get(len(body))
        if plan is None or not isinstance(hook_request, dict) or not validate_picked(plan, hook_request):
            return Response(b'{"error":"not a record this app was started with"}', status=400, mimetype=_JSON)
        return Response(CARD, mimetype=_JSON)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', mimetype=_JSON)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", required=True)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--jwks", type=Path, required=True, help="the benchmark client's JWKS file")
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--as-of", type=dt.date.fromisoformat, required=True, help="evaluation date")
    parser.add_argument("--record", type=Path, action="append", required=True, help="request body file")
    args = parser.parse_args(argv)
    from cds_service.cli import GunicornApplication  # noqa: PLC0415
    from cds_service.config import load_settings  # noqa: PLC0415
    from cds_service.gunicorn_conf import gunicorn_options  # noqa: PLC0415
    from cds_service.knowledge.loader import packaged_knowledge  # noqa: PLC0415

    # Planned in the master before the workers fork: never on a timed call.
    plans = plans_by_length((path.read_bytes() for path in args.record), packaged_knowledge(), args.as_of)
    tokens = TokenCheck(args.jwks, args.issuer, args.audience)
    environ = {
        **os.environ,
        "CDS_HOST": "127.0.0.1",
        "CDS_PORT": args.port,
        "CDS_WORKERS": args.workers,
        "CDS_LOG_LEVEL": "WARNING",
    }
    options = gunicorn_options(load_settings(environ))
    options["proc_name"] = "cds-stack-floor"
    GunicornApplication(lambda: create_stack_floor_app(tokens, plans), options).run()


if __name__ == "__main__":
    main()
