"""Real-world medication shapes (protocol §3c) through the engine, with metamorphic checks.

Each shape re-encodes the facts of a shared scenario bundle (s01 alendronate statement, s12 denosumab
administrations, s52 completed teriparatide course) and must give the same decision object.
"""

from __future__ import annotations

import copy
from datetime import date, timedelta
from typing import Any

import pytest

from cds_service.facts import extract_strength
from cds_service.facts.dates import add_months
from cds_service.facts.extract import extract_record
from cds_service.facts.parse import parse_resources
from cds_service.rules.exposure import agent_exposures, pth_use_days, record_coverage, romosozumab_doses
from tests.support.medication_shapes import (
    ALENDRONATE_70,
    AS_OF,
    DENOSUMAB_60,
    KNOWLEDGE,
    ROMOSOZUMAB,
    TERIPARATIDE_PEN,
    ZOLEDRONIC_5,
    administration,
    as_reference,
    concept,
    decide,
    dispense,
    medication,
    patient_ref,
    request,
    resources_of,
    statement,
    without,
)

LAST_DENOSUMAB = date(2025, 1, 15)  # s12's last injection


def _replace(resources: list[dict[str, Any]], rid: str, *new: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for resource in resources:
        out.extend(new if resource.get("id") == rid else [resource])
    return out


def _s12_as(shape: str) -> list[dict[str, Any]]:
    """s12 with each denosumab administration re-encoded in `shape`."""
    out: list[dict[str, Any]] = []
    for r in resources_of("s12"):
        if r["resourceType"] != "MedicationAdministration":
            out.append(r)
        elif shape == "statement":
            out.append(
                statement(r["id"], r["subject"], r["medicationCodeableConcept"], day=r["effectiveDateTime"])
            )
        elif shape == "two-units":
            second = copy.deepcopy(r)
            second["id"] = r["id"] + "-b"
            out.extend([r, second])
        else:
            raise AssertionError(shape)
    return out


def _medication_records(resources: list[dict[str, Any]]) -> Any:
    return extract_record(parse_resources(resources, KNOWLEDGE), KNOWLEDGE).medications


# ----- 3c-stopped ------------------------------------------------------------------------------------
@pytest.mark.protocol("3c-stopped", "R3c", "W-ANABOLIC_FOLLOW_ON_MISSING")
@pytest.mark.parametrize("status", ["stopped", "on-hold"])
def test_stopped_statement_is_the_same_past_course(status: str) -> None:
    base = resources_of("s52")
    stopped = copy.deepcopy(base)
    next(r for r in stopped if r["id"] == "s52-medstmt-3")["status"] = status
    assert decide(stopped) == decide(base)
    assert decide(base)["rule"] == "R3c"


@pytest.mark.protocol("3c-stopped", "R3c", "4-anabolic-course")
def test_two_year_teriparatide_course_as_a_stopped_order_is_a_past_course() -> None:
    base = resources_of("s52")
    subject = patient_ref(base)
    order = request(
        "s52-order-teri",
        subject,
        concept(TERIPARATIDE_PEN, "teriparatide 20 mcg SC daily"),
        status="stopped",
        authored="2022-06-01",
        start="2022-06-01",
        end="2024-06-01",
    )
    decision = decide(_replace(base, "s52-medstmt-3", order))
    assert without(decision, "caveats") == without(decide(base), "caveats")
    assert decision["outcome"] == "SPECIALIST_REVIEW" and decision["rule"] == "R3c"
    assert not any(a["status"] == "preferred" and a["agent"] == "teriparatide" for a in decision["agents"])


@pytest.mark.protocol("3c-stopped", "4-coverage")
@pytest.mark.parametrize(
    ("drug", "end", "expected_days"),
    [
        (ALENDRONATE_70, None, 7),  # no stop date: one interval after the start
        (TERIPARATIDE_PEN, None, 1),
        (ALENDRONATE_70, "2023-12-31", 1095),  # ends at the period's end (inclusive)
        (ALENDRONATE_70, "2021-01-01", 1),  # stopped on its first day
    ],
)
def test_stopped_order_coverage_ends_at_the_stop(
    drug: dict[str, str], end: str | None, expected_days: int
) -> None:
    order = request(
        "o1",
        {"reference": "Patient/p"},
        concept(drug),
        status="stopped",
        authored="2021-01-01",
        start="2021-01-01",
        end=end,
    )
    order["dispenseRequest"]["expectedSupplyDuration"] = {
        "value": 90,
        "unit": "days",
        "code": "d",
        "system": "http://unitsofmeasure.org",
    }
    order["dispenseRequest"]["numberOfRepeatsAllowed"] = 11  # never supply x repeats once stopped
    (record,) = _medication_records([order])
    coverage = record_coverage(record, AS_OF, KNOWLEDGE)
    assert coverage is not None and coverage.days == expected_days


@pytest.mark.protocol("3c-stopped", "R6")
def test_stopped_first_line_order_counts_as_first_line_history() -> None:
    base = resources_of("s01")
    subject = patient_ref(base)
    order = request(
        "s01-order-aln",
        subject,
        concept(ALENDRONATE_70),
        status="stopped",
        authored="2021-03-01",
        start="2021-03-01",
        end="2025-05-31",
    )
    decision = decide(_replace(base, "s01-medstmt-2", order))
    assert decision["outcome"] not in ("INSUFFICIENT_DATA", "NOT_ELIGIBLE_NO_FIRST_LINE")
    assert without(decision, "caveats") == without(decide(base), "caveats")


@pytest.mark.protocol("3c-stopped", "4-anabolic-course")
def test_stopped_teriparatide_counts_toward_the_pth_allowance() -> None:
    order = request(
        "o1",
        {"reference": "Patient/p"},
        concept(TERIPARATIDE_PEN),
        status="stopped",
        authored="2022-06-01",
        start="2022-06-01",
        end="2024-05-31",
    )
    exposures = agent_exposures(_medication_records([order]), AS_OF, KNOWLEDGE)
    assert pth_use_days(exposures, AS_OF) == 731


# ----- 3c-medication-reference (engine) ---------------------------------------------------------------
@pytest.mark.protocol("3c-medication-reference")
@pytest.mark.parametrize("where", ["bundle-relative", "bundle-absolute", "contained"])
def test_referenced_medication_gives_the_same_decision(where: str) -> None:
    base = resources_of("s01")
    original = next(r for r in base if r["id"] == "s01-medstmt-2")
    drug = original["medicationCodeableConcept"]
    if where == "contained":
        shaped = as_reference(original, "#med1", None)
        shaped["contained"] = [medication("med1", drug)]
        extra: list[dict[str, Any]] = []
    else:
        ref = (
            "Medication/m-aln"
            if where == "bundle-relative"
            else "https://ehr.example.org/r4/Medication/m-aln"
        )
        shaped = as_reference(original, ref, None)
        extra = [medication("m-aln", drug)]
    assert decide(_replace(base, "s01-medstmt-2", shaped, *extra)) == decide(base)


@pytest.mark.protocol("3c-medication-reference", "3a-caveat")
@pytest.mark.parametrize("display", ["alendronate 70 mg tablet", "FOSAMAX 70 MG PO TABS"])
def test_unresolved_reference_is_identified_by_its_display(display: str) -> None:
    base = resources_of("s01")
    original = next(r for r in base if r["id"] == "s01-medstmt-2")
    shaped = as_reference(original, "https://ehr.example.org/api/FHIR/R4/Medication/e123", display)
    decision = decide(_replace(base, "s01-medstmt-2", shaped))
    assert without(decision, "caveats") == without(decide(base), "caveats")
    assert "medication identified by name" in decision["caveats"]
    assert "unreadable_resources" not in decision["missing"]


@pytest.mark.protocol("3c-medication-reference", "3c-brands", "3a-caveat")
def test_unresolved_reference_with_a_biosimilar_display() -> None:
    base = resources_of("s12")
    shaped = [
        as_reference(
            r, f"https://ehr.example.org/api/FHIR/R4/Medication/e{r['id']}", "JUBBONTI 60 MG/ML SC SOSY"
        )
        if r["resourceType"] == "MedicationAdministration"
        else r
        for r in base
    ]
    decision = decide(shaped)
    assert without(decision, "caveats") == without(decide(base), "caveats")
    assert "medication identified by name" in decision["caveats"]


@pytest.mark.protocol("3c-medication-reference", "3a-cap")
def test_unresolved_reference_without_a_usable_display_is_unreadable() -> None:
    base = resources_of("s01")
    original = next(r for r in base if r["id"] == "s01-medstmt-2")
    shaped = as_reference(original, "https://ehr.example.org/api/FHIR/R4/Medication/e123", "Home medication")
    decision = decide(
        _replace(
            base,
            "s01-medstmt-2",
            shaped,
            statement(
                "s01-other", patient_ref(base), concept(ALENDRONATE_70), status="active", start="2021-03-01"
            ),
        )
    )
    assert "unreadable_resources" in decision["missing"]
    assert decision["outcome"] == "CONSIDER"


@pytest.mark.protocol("3c-medication-reference", "3a-caveat")
@pytest.mark.parametrize(
    ("display", "read"),
    [
        ("metformin 500 MG Oral Tablet", True),
        ("cholecalciferol 1000 unit tablet", True),
        ("calcium carbonate 1.25 g / vitamin D3 400 IU", True),
        ("Home medication", False),
        ("Lisinopril", False),  # no strength: not enough to call it another product
    ],
)
def test_display_naming_another_product_is_read_as_another_drug(display: str, read: bool) -> None:
    """Epic sends an absolute reference + display: a product display that is no osteoporosis drug is another
    drug (caveat only); generic text stays unreadable and caps the outcome."""
    base = resources_of("s01")
    other = as_reference(
        statement(
            "s01-other-drug", patient_ref(base), concept(ALENDRONATE_70), status="active", start="2022-01-01"
        ),
        "https://ehr.example.org/api/FHIR/R4/Medication/e999",
        display,
    )
    decision = decide([*base, other])
    if read:
        assert without(decision, "caveats") == without(decide(base), "caveats")
        assert any("identified only by their display" in c for c in decision["caveats"])
    else:
        assert "unreadable_resources" in decision["missing"]
        assert decision["outcome"] == "CONSIDER"


# ----- 3c-dose-per-date -------------------------------------------------------------------------------
@pytest.mark.protocol("3c-dose-per-date", "4-coverage")
def test_two_units_on_one_date_are_one_dose() -> None:
    assert decide(_s12_as("two-units")) == decide(resources_of("s12"))


def _romosozumab_dispenses(quantity: int, days_supply: int | None) -> list[dict[str, Any]]:
    subject = {"reference": "Patient/p"}
    drug = concept(ROMOSOZUMAB, "romosozumab 105 mg/1.17 mL syringe")
    start = date(2023, 1, 10)
    return [
        dispense(
            f"romo-{n}", subject, drug, add_months(start, n).isoformat(), quantity, days_supply=days_supply
        )
        for n in range(12)
    ]


@pytest.mark.protocol("3c-dose-per-date", "4-anabolic-course")
@pytest.mark.parametrize(("quantity", "days_supply"), [(1, None), (2, None), (2, 60), (2, 30)])
def test_romosozumab_two_syringes_per_date_is_one_monthly_dose(
    quantity: int, days_supply: int | None
) -> None:
    exposures = agent_exposures(
        _medication_records(_romosozumab_dispenses(quantity, days_supply)), AS_OF, KNOWLEDGE
    )
    romo = exposures["romosozumab"]
    assert romosozumab_doses(romo, AS_OF) == 12
    assert len(romo.intervals) == 1
    assert romo.intervals[0].start == date(2023, 1, 10)
    assert romo.intervals[0].end == date(2024, 1, 9)  # 12th dose 2023-12-10 + 1 month - 1 day


@pytest.mark.protocol("3c-dose-per-date", "4-coverage")
@pytest.mark.parametrize("quantity", [1, 2, 3])
def test_denosumab_dispense_of_several_syringes_covers_one_interval(quantity: int) -> None:
    (record,) = _medication_records(
        [
            dispense(
                "d1",
                {"reference": "Patient/p"},
                concept(DENOSUMAB_60),
                "2024-01-10",
                quantity,
                days_supply=None,
            )
        ]
    )
    coverage = record_coverage(record, AS_OF, KNOWLEDGE)
    assert coverage is not None and coverage.days == 183


# ----- 3c-statement-doses -----------------------------------------------------------------------------
@pytest.mark.protocol("3c-statement-doses", "4-coverage", "3a-caveat")
def test_denosumab_doses_recorded_as_statements() -> None:
    decision = decide(_s12_as("statement"))
    assert without(decision, "caveats") == without(decide(resources_of("s12")), "caveats")
    assert "adherence not verifiable (statements or orders only)" in decision["caveats"]


@pytest.mark.protocol("3c-statement-doses", "R7a")
def test_statement_doses_count_for_the_denosumab_inter_dose_interval() -> None:
    gap = [r for r in _s12_as("statement") if r["id"] != "s12-medadmin-5"]  # 2022-07-15 -> 2023-07-15
    decision = decide(gap)
    assert decision["outcome"] == "NOT_ELIGIBLE_ADHERENCE"


# ----- W-DENOSUMAB_OVERDUE ----------------------------------------------------------------------------
@pytest.mark.protocol("W-DENOSUMAB_OVERDUE", "3c-statement-doses")
@pytest.mark.parametrize("shape", ["administration", "statement"])
@pytest.mark.parametrize(
    ("as_of", "warned", "caveat"),
    [
        (LAST_DENOSUMAB + timedelta(days=212), False, False),
        (LAST_DENOSUMAB + timedelta(days=213), False, False),  # at 213 days: not yet overdue
        (LAST_DENOSUMAB + timedelta(days=214), True, False),
        (add_months(LAST_DENOSUMAB, 24) - timedelta(days=1), True, False),
        (add_months(LAST_DENOSUMAB, 24), True, False),  # at 24 months: still a warning
        (add_months(LAST_DENOSUMAB, 24) + timedelta(days=1), False, True),  # beyond: caveat only
    ],
)
def test_denosumab_overdue_boundaries(shape: str, as_of: date, warned: bool, caveat: bool) -> None:
    resources = resources_of("s12") if shape == "administration" else _s12_as("statement")
    decision = decide(resources, as_of)
    assert ("DENOSUMAB_OVERDUE" in decision["warnings"]) is warned
    assert any("more than 24 months ago" in c for c in decision["caveats"]) is caveat


def _transition(kind: str, start: str) -> dict[str, Any]:
    subject = {"reference": "Patient/s12"}
    if kind == "statement":
        return statement("t1", subject, concept(ALENDRONATE_70), status="active", start=start)
    if kind == "request":
        return request("t1", subject, concept(ALENDRONATE_70), status="active", authored=start)
    if kind == "dispense":
        return dispense("t1", subject, concept(ALENDRONATE_70), start, 26, days_supply=182)
    return administration("t1", subject, concept(ZOLEDRONIC_5), start)


@pytest.mark.protocol("W-DENOSUMAB_OVERDUE", "4-coverage")
@pytest.mark.parametrize("kind", ["statement", "request", "dispense", "administration"])
@pytest.mark.parametrize(
    ("start", "warned"),
    [
        ("2025-07-01", False),  # transition after the last injection, overlapping its coverage
        ("2025-08-20", False),  # transition after the overdue date
        ("2025-01-15", True),  # started on the day of the last injection: not "since"
        ("2024-12-01", True),  # started before the last injection
    ],
)
def test_transition_after_denosumab_suppresses_the_warning_whatever_records_it(
    kind: str, start: str, warned: bool
) -> None:
    decision = decide([*resources_of("s12"), _transition(kind, start)], date(2025, 10, 1))
    assert ("DENOSUMAB_OVERDUE" in decision["warnings"]) is warned


@pytest.mark.protocol("W-DENOSUMAB_OVERDUE")
def test_transition_that_no_longer_covers_as_of_does_not_suppress_the_warning() -> None:
    ended = statement(
        "t1", {"reference": "Patient/s12"}, concept(ALENDRONATE_70), start="2025-07-01", end="2025-08-01"
    )
    assert "DENOSUMAB_OVERDUE" in decide([*resources_of("s12"), ended], date(2025, 10, 1))["warnings"]


@pytest.mark.protocol("W-DENOSUMAB_OVERDUE")
def test_a_new_denosumab_order_is_not_the_overdue_injection() -> None:
    order = request(
        "o1", {"reference": "Patient/s12"}, concept(DENOSUMAB_60), status="active", authored="2025-09-01"
    )
    assert "DENOSUMAB_OVERDUE" in decide([*resources_of("s12"), order], date(2025, 10, 1))["warnings"]


# ----- W-ANABOLIC_FOLLOW_ON_MISSING -------------------------------------------------------------------
@pytest.mark.protocol("W-ANABOLIC_FOLLOW_ON_MISSING", "4-coverage")
@pytest.mark.parametrize("kind", ["statement", "request", "dispense", "administration"])
def test_follow_on_after_the_anabolic_course_whatever_records_it(kind: str) -> None:
    follow_on = _transition(kind, "2024-06-10")
    follow_on["subject"] = {"reference": "Patient/s52"}
    if kind == "dispense":
        follow_on["daysSupply"]["value"] = 365
    decision = decide([*resources_of("s52"), follow_on])
    assert "ANABOLIC_FOLLOW_ON_MISSING" not in decision["warnings"]
    assert "ANABOLIC_FOLLOW_ON_MISSING" in decide(resources_of("s52"))["warnings"]


@pytest.mark.protocol("W-ANABOLIC_FOLLOW_ON_MISSING")
def test_follow_on_statement_not_lost_behind_earlier_dispenses() -> None:
    subject = {"reference": "Patient/s52"}
    early = dispense("d0", subject, concept(ALENDRONATE_70), "2017-03-15", 13, days_supply=91)
    later = statement("t1", subject, concept(ALENDRONATE_70), status="active", start="2024-06-10")
    decision = decide([*resources_of("s52"), early, later])
    assert "ANABOLIC_FOLLOW_ON_MISSING" not in decision["warnings"]


# ----- 4-oncology by interval -------------------------------------------------------------------------
def _doses(shape: str, drug: dict[str, Any], first: date, gap_days: int, count: int) -> list[dict[str, Any]]:
    subject = {"reference": "Patient/s12"}
    days = [(first + timedelta(days=gap_days * n)).isoformat() for n in range(count)]
    if shape == "statement":
        return [statement(f"x{n}", subject, drug, day=day) for n, day in enumerate(days)]
    return [administration(f"x{n}", subject, drug, day) for n, day in enumerate(days)]


@pytest.mark.protocol("4-oncology", "R2", "3c-statement-doses")
@pytest.mark.parametrize("shape", ["administration", "statement"])
@pytest.mark.parametrize(
    ("drug", "gap_days", "oncology"),
    [
        (concept(text="denosumab subcutaneous injection"), 28, True),  # monthly: oncology regimen
        (concept(text="denosumab subcutaneous injection"), 89, True),
        (concept(text="denosumab subcutaneous injection"), 90, False),  # at the interval: not oncology
        (concept(text="denosumab subcutaneous injection"), 91, False),
        (concept(DENOSUMAB_60), 28, True),  # even a 60 mg product given monthly
        (concept(text="zoledronic acid IV infusion"), 179, True),
        (concept(text="zoledronic acid IV infusion"), 180, False),
        (concept(text="zoledronic acid IV infusion"), 181, False),
    ],
)
def test_oncology_by_interval(shape: str, drug: dict[str, Any], gap_days: int, oncology: bool) -> None:
    records = _medication_records(_doses(shape, drug, date(2024, 1, 10), gap_days, 3))
    assert all((r.strength == "oncology") is oncology for r in records)
    assert all((r.role == "oncology_dose") is oncology for r in records)


@pytest.mark.protocol("4-oncology", "R2")
def test_monthly_denosumab_120_by_interval_is_specialist_review() -> None:
    base = [r for r in resources_of("s12") if r["resourceType"] != "MedicationAdministration"]
    monthly = _doses("administration", concept(text="denosumab injection"), date(2024, 1, 10), 28, 12)
    decision = decide([*base, *monthly])
    assert (decision["outcome"], decision["rule"]) == ("SPECIALIST_REVIEW", "R2")


@pytest.mark.protocol("4-oncology")
def test_oncology_interval_is_read_from_the_knowledge_file(tmp_path: Any) -> None:
    from cds_service.knowledge.loader import load_knowledge
    from cds_service.knowledge.schema import PACKAGED_FILE

    text = PACKAGED_FILE.read_text(encoding="utf-8").replace("  denosumab: 90\n", "  denosumab: 30\n")
    assert "  denosumab: 30\n" in text
    changed = tmp_path / "osteoporosis.yaml"
    changed.write_text(text, encoding="utf-8")
    knowledge = load_knowledge(changed)
    doses = _doses("administration", concept(text="denosumab injection"), date(2024, 1, 10), 60, 3)
    records = extract_record(parse_resources(doses, knowledge), knowledge).medications
    assert all(r.strength != "oncology" for r in records)
    assert all(r.strength == "oncology" for r in _medication_records(doses))


# ----- 3c-brands --------------------------------------------------------------------------------------
ONCOLOGY_MG = {agent: set(values) for agent, values in KNOWLEDGE.model.oncology_strengths_mg.items()}


@pytest.mark.protocol("3c-brands")
@pytest.mark.parametrize("brand", KNOWLEDGE.model.medication_brands, ids=lambda b: b.brand)
def test_every_brand_decides_ingredient_and_strength(brand: Any) -> None:
    drug = concept(text=f"{brand.brand.upper()} injection")
    (record,) = _medication_records([administration("b1", {"reference": "Patient/p"}, drug, "2024-01-10")])
    assert record.agent == brand.ingredient
    assert record.matched_by_name
    if brand.strength_mg is not None and brand.strength_mg in ONCOLOGY_MG.get(brand.ingredient, set()):
        assert (record.strength, record.role) == ("oncology", "oncology_dose")
    elif brand.strength_mg is not None and brand.ingredient in extract_strength.STRENGTH_DEPENDENT:
        assert record.strength == "osteoporosis"


@pytest.mark.protocol("3c-brands")
def test_brands_are_knowledge_not_code() -> None:
    assert not hasattr(extract_strength, "_OSTEOPOROSIS_BRANDS")
    brands = {b.brand: b for b in KNOWLEDGE.model.medication_brands}
    for name, strength in [
        ("jubbonti", "60"),
        ("wyost", "120"),
        ("stoboclo", "60"),
        ("osenvelt", "120"),
        ("prolia", "60"),
        ("xgeva", "120"),
        ("reclast", "5"),
        ("aclasta", "5"),
        ("zometa", "4"),
    ]:
        assert brands[name].strength_mg == strength
    assert {"bonsity", "forteo"} <= set(brands)
    assert all(b.source.startswith("http") for b in brands.values())


@pytest.mark.protocol("3c-brands", "R2")
@pytest.mark.parametrize(
    ("brand", "oncology"), [("Jubbonti", False), ("Stoboclo", False), ("Wyost", True), ("Osenvelt", True)]
)
def test_s12_given_as_a_biosimilar(brand: str, oncology: bool) -> None:
    base = resources_of("s12")
    shaped = copy.deepcopy(base)
    for r in shaped:
        if r["resourceType"] == "MedicationAdministration":
            r["medicationCodeableConcept"] = concept(text=f"{brand} prefilled syringe")
    decision = decide(shaped)
    if oncology:
        assert (decision["outcome"], decision["rule"]) == ("SPECIALIST_REVIEW", "R2")
    else:
        assert without(decision, "caveats") == without(decide(base), "caveats")


# ----- 3c-implausible ---------------------------------------------------------------------------------
@pytest.mark.protocol("3c-implausible", "3b-dates")
def test_sentinel_period_end_is_an_open_end() -> None:
    base = resources_of("s01")
    shaped = copy.deepcopy(base)
    next(r for r in shaped if r["id"] == "s01-medstmt-2")["effectivePeriod"]["end"] = "9999-12-31"
    assert decide(shaped) == decide(base)


@pytest.mark.protocol("3c-implausible")
@pytest.mark.parametrize(
    ("day", "ignored"),
    [
        ("1899-12-31", True),
        ("1900-01-01", False),
        ("2026-06-01", False),  # as_of + 1 year: kept
        ("2026-06-02", True),  # after as_of + 1 year: ignored
        ("9999-12-31", True),
    ],
)
def test_implausible_medication_dates_are_ignored_with_a_caveat(day: str, ignored: bool) -> None:
    extra = administration("odd", {"reference": "Patient/s12"}, concept(DENOSUMAB_60), day)
    decision = decide([*resources_of("s12"), extra])
    caveat = f"ignored denosumab record dated {day}: implausible date"
    assert (caveat in decision["caveats"]) is ignored
    if ignored:
        assert without(decision, "caveats") == without(decide(resources_of("s12")), "caveats")


@pytest.mark.protocol("3c-implausible")
def test_implausible_period_dates_never_fail() -> None:
    odd = statement(
        "odd",
        {"reference": "Patient/s12"},
        concept(ALENDRONATE_70),
        status="stopped",
        start="0001-01-01",
        end="9999-12-31",
    )
    decision = decide([*resources_of("s12"), odd])
    assert "ignored alendronate record dated 0001-01-01: implausible date" in decision["caveats"]


@pytest.mark.protocol("3c-statement-doses", "4-anabolic-course")
def test_romosozumab_doses_recorded_as_statements() -> None:
    subject = {"reference": "Patient/p"}
    drug = concept(ROMOSOZUMAB, "romosozumab 210 mg SC")
    start = date(2023, 1, 10)
    statements = [statement(f"r{n}", subject, drug, day=add_months(start, n).isoformat()) for n in range(12)]
    romo = agent_exposures(_medication_records(statements), AS_OF, KNOWLEDGE)["romosozumab"]
    assert romo.dose_dates == tuple(add_months(start, n) for n in range(12))
    assert romosozumab_doses(romo, AS_OF) == 12
    assert not romo.verified  # a statement never makes exposure verified
