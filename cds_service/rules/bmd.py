"""DXA selection and BMD response (protocol §5)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from cds_service.core.frozen_init import one_step_init
from cds_service.facts.dates import add_months
from cds_service.facts.patient_record import BmdResult, ScannerId
from cds_service.knowledge.indexed import Knowledge
from cds_service.rules.decision import DxaEvidence, SiteResponse

ScannerStatus = Literal["same", "unknown", "changed"]
DECIDING_SITES = ("total_hip", "lumbar_spine")
TARGET_SITES = ("total_hip", "femoral_neck")
DIAGNOSTIC_SITES = ("total_hip", "femoral_neck", "lumbar_spine", "radius")
HUNDREDTH = Decimal("0.01")
TENTH = Decimal("0.1")
_NO_SCANNERS: dict[tuple[str, str], ScannerId] = {}  # read only: a date without a known scanner


@one_step_init
@dataclass(frozen=True)
class Scan:
    """One DXA: the values with the same date and scanner."""

    date: date
    scanner: ScannerId | None
    values: tuple[BmdResult, ...]

    def has_site(self, site: str) -> bool:
        return any(v.site == site for v in self.values)

    def results_at(self, site: str, kind: str) -> list[BmdResult]:
        return [v for v in self.values if v.site == site and v.kind == kind]


def group_scans(results: tuple[BmdResult, ...], as_of: date) -> list[Scan]:
    """Scans: the values with the same date and scanner (§5).

    A value without a scanner on a date when exactly one scanner was recorded belongs to that scan (one
    visit, one machine: e.g. a transcribed copy of some of its values). Kept apart it would look like a
    scan of unknown scanner and could hide a real scanner change ("assumed same scanner").
    """
    groups: dict[tuple[date, tuple[str, str] | None], list[BmdResult]] = {}
    scanners: dict[tuple[date, tuple[str, str] | None], ScannerId | None] = {}
    known: dict[date, dict[tuple[str, str], ScannerId]] = {}
    for result in results:
        if result.scanner is not None:
            known.setdefault(result.date, {}).setdefault(
                (result.scanner.kind, result.scanner.value), result.scanner
            )
    for result in results:
        if result.date > as_of:
            continue
        scanner = result.scanner
        same_day = known.get(result.date, _NO_SCANNERS)
        if scanner is None and len(same_day) == 1:
            scanner = next(iter(same_day.values()))
        key = (result.date, (scanner.kind, scanner.value) if scanner else None)
        groups.setdefault(key, []).append(result)
        scanners[key] = scanner
    scans = [Scan(day, scanners[(day, sk)], tuple(vals)) for (day, sk), vals in groups.items()]
    return sorted(scans, key=lambda s: (s.date, s.scanner.value if s.scanner else ""))


def scanner_status(first: ScannerId | None, second: ScannerId | None) -> ScannerStatus:
    if first is None or second is None:
        return "unknown"
    return "same" if (first.kind, first.value) == (second.kind, second.value) else "changed"


def baseline_scan(scans: list[Scan], site: str, start: date, knowledge: Knowledge) -> Scan | None:
    window_start = add_months(start, -knowledge.windows.baseline_before_start_months)
    window_end = add_months(start, knowledge.windows.baseline_after_start_months)
    found = [s for s in scans if window_start <= s.date <= window_end and s.has_site(site)]
    return found[-1] if found else None


def followup_window_start(start: date, knowledge: Knowledge) -> date:
    return add_months(start, knowledge.windows.therapy_min_months)


def followup_candidates(scans: list[Scan], start: date, as_of: date, knowledge: Knowledge) -> list[Scan]:
    window_start = followup_window_start(start, knowledge)
    return [s for s in scans if window_start <= s.date <= as_of]


def is_stale(scan: Scan, as_of: date, knowledge: Knowledge) -> bool:
    return scan.date < add_months(as_of, -knowledge.windows.followup_max_age_months)


def followup_scan(
    candidates: list[Scan], site: str, baseline: Scan | None
) -> tuple[Scan | None, ScannerStatus]:
    """The latest same-scanner scan with the site; else the latest one (scanner change)."""
    with_site = [s for s in candidates if s.has_site(site)]
    if not with_site:
        return None, "unknown"
    ref = baseline.scanner if baseline else None
    for preferred in ("same", "unknown"):
        matching = [s for s in with_site if scanner_status(ref, s.scanner) == preferred]
        if matching:
            return matching[-1], "same" if preferred == "same" else "unknown"
    return with_site[-1], "changed"


def _mean(values: list[Decimal]) -> Decimal:
    return sum(values, Decimal(0)) / Decimal(len(values))


def _side_values(base: list[BmdResult], follow: list[BmdResult]) -> tuple[Decimal, Decimal, bool] | None:
    """Values to compare: same side at both times; both sides -> mean; sides differ -> flagged."""
    if not base or not follow:
        return None
    base_sides = {v.side for v in base}
    follow_sides = {v.side for v in follow}
    common = base_sides & follow_sides
    if common:
        baseline_mean = _mean([v.value for v in base if v.side in common])
        followup_mean = _mean([v.value for v in follow if v.side in common])
        return baseline_mean, followup_mean, False
    return _mean([v.value for v in base]), _mean([v.value for v in follow]), True


def round_delta_t(value: Decimal) -> Decimal:
    return value.quantize(HUNDREDTH, rounding=ROUND_HALF_UP)


def round_pct(value: Decimal) -> Decimal:
    return value.quantize(TENTH, rounding=ROUND_HALF_UP)


def shown_t(value: Decimal, limit: Decimal, *, above: bool) -> str:
    """A T-score as text rounded half-up to 0.1, unless rounding would flip its stated comparison with
    `limit` (`value > limit` if `above`, else `value <= limit`): then the value as recorded."""
    rounded = value.quantize(TENTH, rounding=ROUND_HALF_UP)
    holds = (value > limit) if above else (value <= limit)
    still = (rounded > limit) if above else (rounded <= limit)
    return format(rounded if holds == still else value, "f")


@dataclass(frozen=True)
class SiteAssessment:
    response: SiteResponse | None  # None: not assessable (values missing at either time)
    caveats: tuple[str, ...]


def assess_site(
    site: str, base: Scan, follow: Scan, status: ScannerStatus, knowledge: Knowledge
) -> SiteAssessment:
    thresholds = knowledge.thresholds
    target_dt = (
        thresholds.target_delta_t_total_hip if site == "total_hip" else thresholds.target_delta_t_lumbar_spine
    )
    target_pct = (
        thresholds.target_pct_total_hip if site == "total_hip" else thresholds.target_pct_lumbar_spine
    )
    caveats: list[str] = []
    t_pair = _side_values(base.results_at(site, "t_score"), follow.results_at(site, "t_score"))
    b_pair = _side_values(base.results_at(site, "bmd"), follow.results_at(site, "bmd"))
    delta_t = round_delta_t(t_pair[1] - t_pair[0]) if t_pair else None
    pct = round_pct((b_pair[1] - b_pair[0]) / b_pair[0] * 100) if b_pair and b_pair[0] != 0 else None
    label = site.replace("_", " ")
    if (t_pair and t_pair[2]) or (b_pair and b_pair[2]):
        caveats.append(f"{label}: different sides measured at baseline and follow-up")
    use_pct = pct is not None and (status == "same" or delta_t is None)
    if status == "unknown" and (delta_t is not None or pct is not None):
        caveats.append(f"{label}: assumed same scanner (no device recorded)")
    if use_pct and pct is not None:
        met = pct >= target_pct
        if delta_t is not None and (delta_t >= target_dt) != met:
            caveats.append(f"{label}: % change and ΔT disagree; % change decides")
        response = SiteResponse(site, base.date, follow.date, delta_t, pct, "pct", target_pct, met)
    elif delta_t is not None:
        response = SiteResponse(
            site, base.date, follow.date, delta_t, pct, "delta_t", target_dt, delta_t >= target_dt
        )
    else:
        response = None
    return SiteAssessment(response, tuple(caveats))


def lowest_target_t(scan: Scan) -> Decimal | None:
    values = [v.value for v in scan.values if v.site in TARGET_SITES and v.kind == "t_score"]
    return min(values) if values else None


def dxa_evidence(scan: Scan, role: str, status: str, sites: tuple[str, ...]) -> list[DxaEvidence]:
    return [
        DxaEvidence(v.date, v.site, v.side, v.kind, v.value, status, role)
        for v in scan.values
        if v.site in sites
    ]
