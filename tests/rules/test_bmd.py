"""rules/bmd.py, one row per clinical situation of protocol §5 (DXA grouping, scanner, follow-up choice,
hip side, metric). Scans are built directly: no FHIR, no decision table."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from cds_service.facts.patient_record import BmdResult, ScannerId
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules import bmd
from tests.clinical_builders import SCANNER, d

K = packaged_knowledge()
AS_OF = date(2025, 6, 1)
OTHER = ScannerId("identifier", "sn:2002", "DXA-2 (SN 2002)")


def value(
    day: str,
    site: str = "total_hip",
    number: str = "-2.5",
    *,
    kind: str = "t_score",
    side: str | None = None,
    scanner: ScannerId | None = SCANNER,
) -> BmdResult:
    return BmdResult(d(day), site, side, kind, Decimal(number), scanner, f"obs-{day}-{site}-{side}-{kind}")  # type: ignore[arg-type]


def scan(day: str, *values: BmdResult, scanner: ScannerId | None = SCANNER) -> bmd.Scan:
    return bmd.Scan(d(day), scanner, values)


# ----- grouping: "a DXA = the Observations and components with the same date and scanner" (§5) -------
@pytest.mark.protocol("5-dxa")
@pytest.mark.parametrize(
    ("results", "expected"),
    [
        pytest.param(
            (value("2024-05-20"), value("2024-05-20", "lumbar_spine", scanner=None)),
            [("2024-05-20", SCANNER, 2)],
            id="§5: a value without device on a one-scanner day joins that scan",
        ),
        pytest.param(
            (
                value("2024-05-20"),
                value("2024-05-20", scanner=OTHER),
                value("2024-05-20", "lumbar_spine", scanner=None),
            ),
            [("2024-05-20", None, 1), ("2024-05-20", SCANNER, 1), ("2024-05-20", OTHER, 1)],
            id="§5: two scanners that day -> a device-less value stays apart (unknown)",
        ),
        pytest.param(
            (value("2021-02-15", scanner=None), value("2024-05-20", scanner=None)),
            [("2021-02-15", None, 1), ("2024-05-20", None, 1)],
            id="§5: no device anywhere -> scans of unknown scanner, one per date",
        ),
        pytest.param(
            (value("2025-06-01"), value("2025-06-02")),
            [("2025-06-01", SCANNER, 1)],
            id="§5: a scan after as_of is ignored (as_of itself counts)",
        ),
    ],
)
def test_group_scans(
    results: tuple[BmdResult, ...], expected: list[tuple[str, ScannerId | None, int]]
) -> None:
    scans = bmd.group_scans(results, AS_OF)
    assert [(s.date, s.scanner, len(s.values)) for s in scans] == [(d(day), sc, n) for day, sc, n in expected]


@pytest.mark.protocol("5-dxa")
@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        pytest.param(SCANNER, SCANNER, "same", id="§5: same device identifier -> same"),
        pytest.param(SCANNER, OTHER, "changed", id="§5: different identifier -> change"),
        pytest.param(None, SCANNER, "unknown", id="§5: no device on the baseline -> unknown"),
        pytest.param(SCANNER, None, "unknown", id="§5: no device on the follow-up -> unknown"),
    ],
)
def test_scanner_status(first: ScannerId | None, second: ScannerId | None, expected: str) -> None:
    assert bmd.scanner_status(first, second) == expected


# ----- follow-up choice: "the latest same-scanner scan in the window; only if none, the latest" (§5) ---
BASE = scan("2021-02-15", value("2021-02-15"))


@pytest.mark.protocol("5-dxa")
@pytest.mark.parametrize(
    ("candidates", "baseline", "expected_date", "expected_status"),
    [
        pytest.param(
            [
                scan("2024-05-20", value("2024-05-20")),
                scan("2024-09-01", value("2024-09-01", scanner=OTHER), scanner=OTHER),
            ],
            BASE,
            "2024-05-20",
            "same",
            id="§5: an older same-scanner scan beats a later scan on another scanner",
        ),
        pytest.param(
            [scan("2024-09-01", value("2024-09-01", scanner=OTHER), scanner=OTHER)],
            BASE,
            "2024-09-01",
            "changed",
            id="§5: only another scanner -> the latest scan, scanner change",
        ),
        pytest.param(
            [
                scan("2024-05-20", value("2024-05-20", scanner=OTHER), scanner=OTHER),
                scan("2024-09-01", value("2024-09-01", scanner=None), scanner=None),
            ],
            BASE,
            "2024-09-01",
            "unknown",
            id="§5: a device-less scan is preferred to a known change (assumed same)",
        ),
        pytest.param(
            [scan("2024-05-20", value("2024-05-20"))],
            None,
            "2024-05-20",
            "unknown",
            id="§5: no baseline -> unknown scanner status",
        ),
        pytest.param(
            [scan("2024-05-20", value("2024-05-20", "lumbar_spine"))],
            BASE,
            None,
            "unknown",
            id="§5: no follow-up scan with the site -> none",
        ),
    ],
)
def test_followup_scan(
    candidates: list[bmd.Scan], baseline: bmd.Scan | None, expected_date: str | None, expected_status: str
) -> None:
    chosen, status = bmd.followup_scan(candidates, "total_hip", baseline)
    assert (chosen.date if chosen else None) == (d(expected_date) if expected_date else None)
    assert status == expected_status


@pytest.mark.protocol("5-dxa")
@pytest.mark.parametrize(
    ("scan_day", "found"),
    [
        pytest.param("2019-03-01", True, id="§5: start - 24 months is inside the baseline window"),
        pytest.param("2019-02-28", False, id="§5: one day before start - 24 months is outside"),
        pytest.param("2021-06-01", True, id="§5: start + 3 months is inside"),
        pytest.param("2021-06-02", False, id="§5: one day after start + 3 months is outside"),
    ],
)
def test_baseline_window_edges(scan_day: str, found: bool) -> None:
    scans = [scan(scan_day, value(scan_day))]
    assert (bmd.baseline_scan(scans, "total_hip", d("2021-03-01"), K) is not None) is found


@pytest.mark.protocol("5-dxa")
@pytest.mark.parametrize(
    ("scan_day", "stale"),
    [
        pytest.param("2023-06-01", False, id="§5: exactly 24 months old is still usable"),
        pytest.param("2023-05-31", True, id="§5: older than 24 months -> repeat DXA"),
    ],
)
def test_followup_age_limit(scan_day: str, stale: bool) -> None:
    assert bmd.is_stale(scan(scan_day, value(scan_day)), AS_OF, K) is stale


# ----- metric and hip side (§5) -------------------------------------------------------------------------
@pytest.mark.protocol("5-dxa", "3b-rounding")
@pytest.mark.parametrize(
    ("base_values", "follow_values", "status", "expected"),
    [
        pytest.param(
            [value("2021-02-15", number="-2.6", side="left")],
            [value("2024-05-20", number="-2.3", side="right")],
            "same",
            (
                "delta_t",
                Decimal("0.30"),
                True,
                ["total hip: different sides measured at baseline and follow-up"],
            ),
            id="§5 hip side: sides differ -> used with a caveat (+0.30 meets 0.20)",
        ),
        pytest.param(
            [
                value("2021-02-15", number="-2.6", side="left"),
                value("2021-02-15", number="-2.8", side="right"),
            ],
            [
                value("2024-05-20", number="-2.5", side="left"),
                value("2024-05-20", number="-2.5", side="right"),
            ],
            "same",
            ("delta_t", Decimal("0.20"), True, []),
            id="§5 hip side: both sides at both times -> mean (ΔT 0.20 = target, met)",
        ),
        pytest.param(
            [value("2021-02-15", number="-2.6")],
            [value("2024-05-20", number="-2.41")],
            "unknown",
            ("delta_t", Decimal("0.19"), False, ["total hip: assumed same scanner (no device recorded)"]),
            id="§5 scanner: no device -> ΔT with 'assumed same scanner' (0.19 < 0.20)",
        ),
        pytest.param(
            [value("2021-02-15", number="0.800", kind="bmd"), value("2021-02-15", number="-2.6")],
            [value("2024-05-20", number="0.824", kind="bmd"), value("2024-05-20", number="-2.5")],
            "same",
            ("pct", Decimal("3.0"), True, ["total hip: % change and ΔT disagree; % change decides"]),
            id="§5 metric: g/cm² on the same scanner -> % decides (3.0 % met, ΔT 0.10 not)",
        ),
        pytest.param(
            [value("2021-02-15", number="0.800", kind="bmd"), value("2021-02-15", number="-2.6")],
            [value("2024-05-20", number="0.824", kind="bmd"), value("2024-05-20", number="-2.5")],
            "unknown",
            ("delta_t", Decimal("0.10"), False, ["total hip: assumed same scanner (no device recorded)"]),
            id="§5 metric: scanner not known the same -> ΔT decides even with g/cm²",
        ),
        pytest.param(
            [value("2021-02-15", number="0.800", kind="bmd")],
            [value("2024-05-20", number="0.823", kind="bmd")],
            "unknown",
            ("pct", Decimal("2.9"), False, ["total hip: assumed same scanner (no device recorded)"]),
            id="§5 metric: only g/cm² -> % change (2.9 % < 3.0 %)",
        ),
    ],
)
def test_assess_site(
    base_values: list[BmdResult],
    follow_values: list[BmdResult],
    status: bmd.ScannerStatus,
    expected: tuple[str, Decimal, bool, list[str]],
) -> None:
    base = scan("2021-02-15", *base_values)
    follow = scan("2024-05-20", *follow_values)
    assessment = bmd.assess_site("total_hip", base, follow, status, K)
    response = assessment.response
    assert response is not None
    metric, number, met, caveats = expected
    assert response.metric == metric
    assert (response.pct_change if metric == "pct" else response.delta_t) == number
    assert response.met is met
    assert list(assessment.caveats) == caveats


@pytest.mark.protocol("R8", "5-dxa")
def test_assess_site_without_comparable_values_is_not_assessable() -> None:
    """§5/R8: a T-score at baseline and only g/cm² at follow-up cannot be compared."""
    base = scan("2021-02-15", value("2021-02-15"))
    follow = scan("2024-05-20", value("2024-05-20", number="0.8", kind="bmd"))
    assert bmd.assess_site("total_hip", base, follow, "same", K).response is None


@pytest.mark.protocol("7-plan")
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            [value("2024-05-20", number="-2.4"), value("2024-05-20", "femoral_neck", number="-2.7")],
            Decimal("-2.7"),
            id="§7: lowest of total hip and femoral neck",
        ),
        pytest.param(
            [value("2024-05-20", "lumbar_spine", number="-3.5")], None, id="§7: spine alone gives no target T"
        ),
    ],
)
def test_lowest_target_t(values: list[BmdResult], expected: Decimal | None) -> None:
    assert bmd.lowest_target_t(scan("2024-05-20", *values)) == expected


@pytest.mark.protocol("3b-rounding", "R5")
@pytest.mark.parametrize(
    ("value", "above", "shown"),
    [
        pytest.param("-2.64", False, "-2.6", id="T -2.64 <= -2.5 shown rounded to 0.1"),
        pytest.param("-2.34", True, "-2.3", id="T -2.34 > -2.5 shown rounded to 0.1"),
        pytest.param("-2.46", True, "-2.46", id="T -2.46 > -2.5 would read -2.5 once rounded -> as recorded"),
        pytest.param("-2.54", False, "-2.5", id="T -2.54 <= -2.5: rounded -2.5 keeps the comparison"),
        pytest.param("-2.45", True, "-2.45", id="T -2.45 > -2.5 but rounds half-up to -2.5 -> as recorded"),
    ],
)
def test_shown_t_never_flips_the_stated_comparison(value: str, above: bool, shown: str) -> None:
    assert bmd.shown_t(Decimal(value), Decimal("-2.5"), above=above) == shown
