"""Per-issuer EHR profiles: what one CDS Client (Epic, Oracle Health, the CDS Hooks sandbox, a generic
SMART/HAPI client) needs from our responses and how a failed FHIR query is handled for it.

A profile is written under `profile:` of an issuer in the trusted-issuers file (CDS_TRUSTED_ISSUERS) and
validated at start-up with the rest of that file. `vendor` picks the defaults; every other field overrides
one default. `resolve()` gives the effective settings (docs/ehr-profiles.md lists them per vendor, with
the public pages they come from).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cds_service.core.audience import normalise_url

Vendor = Literal["generic", "epic", "oracle", "sandbox"]
SelectionBehavior = Literal["at-most-one", "any"]
FailurePolicy = Literal["fail", "omit"]
"""`fail`: a key that cannot be obtained answers 412 (CDS Hooks: never a partial recommendation).
`omit`: the key counts as "not available from this EHR": a protocol §3a gap (unknown), never "none"."""

PrefetchKey = Literal[
    "patient",
    "dxa",
    "labs",
    "conditions",
    "procedures",
    "allergies",
    "medicationStatements",
    "medicationRequests",
    "medicationAdministrations",
    "medicationDispenses",
]

RXNORM_URL: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
RXNORM_OID: Final = "urn:oid:2.16.840.1.113883.6.88"
"""RxNorm as an OID URN: the system Epic expects in suggestion actions (Epic's CDS Hooks tutorial)."""

_MAX_HOSTS: Final = 64


@dataclass(frozen=True)
class ResolvedProfile:
    """The effective profile of one issuer: vendor defaults with the file's overrides applied."""

    vendor: Vendor
    suggestion_code_system: str
    selection_behavior: SelectionBehavior | None  # None: CDS_SELECTION_BEHAVIOR
    feedback_audience: tuple[str, ...] | None  # None: the feedback URL under CDS_PUBLIC_BASE_URL
    allowed_link_hosts: frozenset[str] | None  # None: every card link is kept
    failure_policy: Mapping[str, FailurePolicy]  # prefetch key -> policy (every key present)

    def policy(self, key: str) -> FailurePolicy:
        return self.failure_policy.get(key, "fail")

    def omitted_keys(self) -> frozenset[str]:
        return frozenset(key for key, policy in self.failure_policy.items() if policy == "omit")


_ALL_KEYS: Final[tuple[str, ...]] = PrefetchKey.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _VendorDefaults:
    suggestion_code_system: str
    selection_behavior: SelectionBehavior | None
    allowed_link_hosts: frozenset[str] | None
    omit: frozenset[str]


VENDOR_DEFAULTS: Final[Mapping[Vendor, _VendorDefaults]] = MappingProxyType(
    {
        # Any SMART on FHIR / HAPI-style client: the CDS Hooks defaults, every key required.
        "generic": _VendorDefaults(RXNORM_URL, None, None, frozenset()),
        # Epic: RxNorm as an OID, only `any`; SMART links must be allow-listed by the site in Epic, not here.
        "epic": _VendorDefaults(RXNORM_OID, "any", None, frozenset()),
        # Oracle Health: links not registered are stripped by the EHR, so none is sent unless listed;
        # its R4 server documents no MedicationStatement: that key is a gap, not a 412 on every patient.
        "oracle": _VendorDefaults(
            RXNORM_URL, "at-most-one", frozenset(), frozenset({"medicationStatements"})
        ),
        # The CDS Hooks sandbox renders both behaviours; it omits keys it could not prefetch, and the service
        # then queries fhirServer itself: a failure there stays a 412.
        "sandbox": _VendorDefaults(RXNORM_URL, None, None, frozenset()),
    }
)


def _host(value: str) -> str:
    """A bare host name (lower case), or `*.example.org` for its sub-domains."""
    host = value.strip().lower()
    bare = host.removeprefix("*.")
    parts = urlsplit(f"https://{bare}")
    if not bare or parts.hostname != bare or parts.port is not None or "/" in bare:
        raise ValueError(f"{value!r} is not a host name (no scheme, port or path)")
    return host


class EhrProfile(BaseModel):
    """The `profile:` block of one issuer (all fields optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vendor: Vendor = "generic"
    suggestion_code_system: str | None = Field(default=None, min_length=1, max_length=256)
    selection_behavior: SelectionBehavior | None = None
    feedback_audience: tuple[str, ...] | None = None
    allowed_link_hosts: tuple[str, ...] | None = Field(default=None, max_length=_MAX_HOSTS)
    prefetch_failure: dict[PrefetchKey, FailurePolicy] = Field(default_factory=dict)

    @field_validator("feedback_audience", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("feedback_audience")
    @classmethod
    def _audience_urls(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("feedback_audience lists no URL")
        for url in value or ():
            normalise_url(url)
        return value

    @field_validator("allowed_link_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(_host(host) for host in value)

    @field_validator("suggestion_code_system")
    @classmethod
    def _code_system(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://", "urn:oid:", "urn:uuid:")):
            raise ValueError("suggestion_code_system must be an http(s), urn:oid or urn:uuid URI")
        return value

    def resolve(self) -> ResolvedProfile:
        defaults = VENDOR_DEFAULTS[self.vendor]
        policy: dict[str, FailurePolicy] = {
            key: ("omit" if key in defaults.omit else "fail") for key in _ALL_KEYS
        }
        policy.update({str(key): value for key, value in self.prefetch_failure.items()})
        hosts = defaults.allowed_link_hosts
        if self.allowed_link_hosts is not None:
            hosts = frozenset(self.allowed_link_hosts)
        return ResolvedProfile(
            vendor=self.vendor,
            suggestion_code_system=self.suggestion_code_system or defaults.suggestion_code_system,
            selection_behavior=self.selection_behavior or defaults.selection_behavior,
            feedback_audience=self.feedback_audience,
            allowed_link_hosts=hosts,
            failure_policy=MappingProxyType(policy),
        )


GENERIC_PROFILE: Final = EhrProfile().resolve()
SANDBOX_PROFILE: Final = EhrProfile(vendor="sandbox").resolve()


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """`host` is listed, or is a sub-domain of a listed `*.domain`."""
    host = host.lower()
    if host in allowed:
        return True
    return any(entry.startswith("*.") and host.endswith(entry[1:]) for entry in allowed)
