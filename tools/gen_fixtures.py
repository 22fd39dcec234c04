#!/usr/bin/env python3
"""Generate the committed FHIR R4 fixtures from the clinical scenarios.

Usage::

    .venv/bin/python tools/gen_fixtures.py [SCENARIOS_YAML] [--codes DIR]

``SCENARIOS_YAML`` defaults to ``fhir_fixtures/scenarios.yaml``, the repository's copy of the shared clinical
scenarios (``tests/test_scenarios_copy.py`` keeps it identical to the shared file when that is beside the
checkout), so nothing outside the repository is read.

Writes, under ``fhir_fixtures/``:

* ``scenarios/<id>.json``: one FHIR R4 *transaction* Bundle per scenario (PUT entries with deterministic ids
  such as ``s01-obs-3``; the Patient id is the scenario id); at most 50 entries each.
* ``scenarios/index.json``: ``[{id, title, as_of, expect}]`` copied from the YAML, so that nothing reads
  the clinical source files at run time.
* ``demo/<id>-patient-view.json``: ready-to-send CDS Hooks patient-view requests with prefetch and no
  ``fhirServer`` for the demo patients.

Every code written comes from the verified code tables (``--codes``, default the packaged tables
``cds_service/knowledge/codes``, copied verbatim from the verified ones) and is
looked up there, with its display; the only exceptions are condition codes that a scenario states
explicitly and the tables lack (``SCENARIO_CODES_NOT_IN_TABLES``). Unknown YAML keys, drug strings, units or
codes stop the generator: nothing in a scenario is silently dropped.

The committed fixtures are the product; this script documents how they were made.
"""

from __future__ import annotations

import argparse
import base64
import collections
import csv
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.fixtures import hook_request_for_bundle  # noqa: E402

OUT_DIR = REPO_ROOT / "fhir_fixtures"
SCENARIOS_YAML = OUT_DIR / "scenarios.yaml"
CODES_DIR = REPO_ROOT / "cds_service" / "knowledge" / "codes"
MAX_ENTRIES = 50
DEMO_SCENARIOS = {"s01": "ESCALATE", "s02": "RESPONSE_MET", "s12": "denosumab", "s26": "man"}

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
CONDITION_SYSTEMS = {"snomed": SNOMED, "icd10cm": ICD10CM, "icd10": ICD10}
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
FULL_URL_NAMESPACE = uuid.UUID("0b6f3a52-7c1d-5e8a-9f40-2d3c4b5a6978")

# Condition codes stated by a scenario but absent from conditions.csv for that system. They are kept as the
# scenario states them (a fixture must show what the EHR sends), never replaced by a guessed code.
SCENARIO_CODES_NOT_IN_TABLES: dict[tuple[str, str], str] = {
    (
        ICD10CM,
        "M88.9",
    ): "s35: the tables hold WHO ICD-10 M88.9 only; protocol §3b matches the M88 category across"
    " ICD-10 and ICD-10-CM",
    (ICD10CM, "C50.911"): "s37: breast cancer; protocol §3b counts any C00-C96 code as a cancer diagnosis",
}

# ---------------------------------------------------------------------------------------------------------
# The YAML schema this generator understands. Any other key is an error.
SCENARIO_KEYS = {
    "id",
    "title",
    "as_of",
    "expect",
    "why",
    "patient",
    "dxa",
    "frax",
    "medications",
    "conditions",
    "procedures",
    "labs",
    "dxa_pdf",
}
PATIENT_KEYS = {"sex", "birth_date", "deceased"}
DXA_KEYS = {"date", "device", "sites"}
DXA_SITE_KEYS = {"lumbar_spine", "total_hip", "femoral_neck", "radius"}
DXA_MEASURE_KEYS = {"t", "z", "bmd_g_cm2"}
FRAX_KEYS = {"date", "mof", "hip"}
MED_KEYS = {"drug", "resource", "start", "end", "administrations", "dispenses"}
DISPENSE_KEYS = {"date", "days_supply"}
CONDITION_KEYS = {
    "system",
    "code",
    "display",
    "onset",
    "recorded_date",
    "clinical_status",
    "verification_status",
}
PROCEDURE_KEYS = {"system", "code", "display", "date"}
LAB_KEYS = {"kind", "value", "unit", "date", "ref_low", "ref_high"}

# Scenario DXA site -> site column of observations.csv (femoral neck: the "Femur" codes plus bodySite).
DXA_TABLE_SITE = {
    "lumbar_spine": "lumbar_spine",
    "total_hip": "total_hip",
    "femoral_neck": "femur_femoral_neck",
    "radius": "radius_ulna",
}
DXA_MEASURE = {  # scenario key -> (observations.csv kind, unit display, UCUM code)
    "t": ("t_score", "{T-score}", "{T-score}"),
    "z": ("z_score", "{Z-score}", "{Z-score}"),
    "bmd_g_cm2": ("bmd", "g/cm2", "g/cm2"),
}
FEMORAL_NECK_BODY_SITE = ("body_site", "femoral_neck")  # SNOMED 29627003 "Structure of neck of femur"

LAB_CODE = {  # lab kind -> the LOINC code used (must be listed with that kind in observations.csv)
    "egfr": "33914-3",
    "calcium": "17861-6",
    "alkaline_phosphatase": "6768-6",
    "vitamin_d_25oh": "62292-8",
    "albumin": "1751-7",
    "pth": "2731-8",
}
UCUM_UNITS = {  # unit string as written in a scenario -> UCUM code
    "mL/min/1.73m2": "mL/min/{1.73_m2}",
    "mL/min/{1.73_m2}": "mL/min/{1.73_m2}",
    "mg/dL": "mg/dL",
    "mmol/L": "mmol/L",
    "g/dL": "g/dL",
    "g/L": "g/L",
    "U/L": "U/L",
    "ng/mL": "ng/mL",
    "nmol/L": "nmol/L",
    "pg/mL": "pg/mL",
}


@dataclass(frozen=True)
class Product:
    """How a scenario drug string is coded and dosed.

    ``dose``: (value, unit display, UCUM code) given at each administration; ``units_per_dose``: dispensed
    units (tablets, syringes, ...) per dosing interval of ``interval_days``; ``timing``: Timing.repeat.
    """

    system: str
    code: str
    route: str
    dose: tuple[float, str, str] | None
    timing: dict[str, Any]
    units_per_dose: int
    unit_name: str
    interval_days: int
    dosage_text: str


def every(period: int, unit: str) -> dict[str, Any]:
    return {"frequency": 1, "period": period, "periodUnit": unit}


MG = "mg"

# Exact drug strings used by the scenarios. Product-level RxNorm code where the tables have one; the
# Xgeva-strength denosumab has none there, so the ingredient code (993449) and the full text; the
# calcium/cholecalciferol combination has no RxNorm product there, so ATC A12AX and the full text.
# fmt: off
PRODUCTS: dict[str, Product] = {
    "alendronate 70 mg oral tablet weekly": Product(
        system=RXNORM, code="904431", route="oral", dose=(70, MG, MG), timing=every(1, "wk"),
        units_per_dose=1, unit_name="tablet", interval_days=7,
        dosage_text="70 mg by mouth once weekly",
    ),
    "calcium carbonate 500 mg / cholecalciferol 400 IU oral tablet daily": Product(
        system=ATC, code="A12AX", route="oral", dose=None, timing=every(1, "d"),
        units_per_dose=1, unit_name="tablet", interval_days=1,
        dosage_text="1 tablet (calcium 500 mg / vitamin D3 400 IU) by mouth once daily",
    ),
    "denosumab 120 mg/1.7 mL SC every 4 weeks (Xgeva)": Product(
        system=RXNORM, code="993449", route="subcutaneous", dose=(120, MG, MG), timing=every(4, "wk"),
        units_per_dose=1, unit_name="vial", interval_days=28,
        dosage_text="120 mg subcutaneously every 4 weeks",
    ),
    "denosumab 60 mg/mL prefilled syringe SC every 6 months": Product(
        system=RXNORM, code="993452", route="subcutaneous", dose=(60, MG, MG), timing=every(6, "mo"),
        units_per_dose=1, unit_name="syringe", interval_days=183,
        dosage_text="60 mg subcutaneously every 6 months",
    ),
    "raloxifene 60 mg oral tablet daily": Product(
        system=RXNORM, code="1490065", route="oral", dose=(60, MG, MG), timing=every(1, "d"),
        units_per_dose=1, unit_name="tablet", interval_days=1,
        dosage_text="60 mg by mouth once daily",
    ),
    "romosozumab 105 mg/1.17 mL prefilled syringe (210 mg monthly)": Product(
        system=RXNORM, code="2123184", route="subcutaneous", dose=(210, MG, MG), timing=every(1, "mo"),
        units_per_dose=2, unit_name="syringe", interval_days=30,
        dosage_text="210 mg (two 105 mg/1.17 mL syringes) subcutaneously once monthly",
    ),
    "teriparatide 20 mcg SC daily (pen 600 mcg/2.4 mL)": Product(
        system=RXNORM, code="1435115", route="subcutaneous", dose=(20, "mcg", "ug"), timing=every(1, "d"),
        units_per_dose=1, unit_name="pen", interval_days=28,
        dosage_text="20 mcg subcutaneously once daily",
    ),
    "zoledronic acid 5 mg/100 mL IV infusion": Product(
        system=RXNORM, code="705824", route="intravenous", dose=(5, MG, MG), timing=every(1, "a"),
        units_per_dose=1, unit_name="bottle", interval_days=365,
        dosage_text="5 mg by intravenous infusion once yearly",
    ),
}
# fmt: on


class FixtureError(Exception):
    """A scenario fact cannot be represented as the generator's rules require."""


# ---------------------------------------------------------------------------------------------------------
# Code tables


@dataclass
class CodeTables:
    observations: list[dict[str, str]]
    medications: list[dict[str, str]]
    conditions: set[tuple[str, str]]

    @classmethod
    def load(cls, codes_dir: Path) -> CodeTables:
        def rows(name: str) -> list[dict[str, str]]:
            with (codes_dir / name).open(encoding="utf-8", newline="") as fh:
                return list(csv.DictReader(fh))

        return cls(
            observations=rows("observations.csv"),
            medications=rows("medications.csv"),
            conditions={(r["system"], r["code"]) for r in rows("conditions.csv")},
        )

    def observation(self, kind: str, site: str = "", system: str = LOINC) -> tuple[str, str]:
        """(code, display) of the first observations.csv row with this kind and site."""
        for row in self.observations:
            if row["system"] == system and row["kind"] == kind and row["site"] == site:
                return row["code"], row["display"]
        raise FixtureError(f"observations.csv has no {system} row with kind={kind!r} site={site!r}")

    def observation_by_code(self, code: str, kind: str) -> tuple[str, str]:
        for row in self.observations:
            if row["system"] == LOINC and row["code"] == code and row["kind"] == kind:
                return row["code"], row["display"]
        raise FixtureError(f"observations.csv does not list LOINC {code} as {kind!r}")

    def observation_unit(self, kind: str) -> str:
        units = {row["unit"] for row in self.observations if row["kind"] == kind and row["system"] == LOINC}
        if len(units) != 1:
            raise FixtureError(f"observations.csv has no single unit for kind {kind!r}: {units}")
        return units.pop()

    def medication_display(self, system: str, code: str) -> str:
        for row in self.medications:
            if row["system"] == system and row["code"] == code:
                return row["display"]
        raise FixtureError(f"medications.csv has no {system}|{code}")

    def check_condition(self, system: str, code: str) -> None:
        if (system, code) not in self.conditions and (system, code) not in SCENARIO_CODES_NOT_IN_TABLES:
            raise FixtureError(f"conditions.csv has no {system}|{code} (add it to the tables, with a source)")


# ---------------------------------------------------------------------------------------------------------
# YAML key audit


def key_paths(value: Any, path: str, counter: collections.Counter[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            counter[child] += 1
            key_paths(item, child, counter)
    elif isinstance(value, list):
        for item in value:
            key_paths(item, f"{path}[]", counter)


def check_keys(where: str, mapping: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise FixtureError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    unknown = set(mapping) - allowed
    if unknown:
        raise FixtureError(f"{where}: keys the generator does not map: {sorted(unknown)}")
    return mapping


# ---------------------------------------------------------------------------------------------------------
# FHIR building blocks


def coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def quantity(value: float, unit: str, ucum: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}


def category(code: str, display: str) -> list[dict[str, Any]]:
    return [{"coding": [coding(OBS_CATEGORY, code, display)]}]


def tiny_pdf(text: str) -> bytes:
    """A minimal one-page PDF showing ``text`` (ASCII, no parentheses or backslashes)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


class BundleBuilder:
    def __init__(self, scenario_id: str) -> None:
        self.scenario_id = scenario_id
        self.entries: list[dict[str, Any]] = []
        self.counters: collections.Counter[str] = collections.Counter()

    @property
    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.scenario_id}"}

    def next_id(self, prefix: str) -> str:
        self.counters[prefix] += 1
        return f"{self.scenario_id}-{prefix}-{self.counters[prefix]}"

    def add(self, resource: dict[str, Any]) -> None:
        ref = f"{resource['resourceType']}/{resource['id']}"
        self.entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(FULL_URL_NAMESPACE, ref)}",
                "resource": resource,
                "request": {"method": "PUT", "url": ref},
            }
        )

    def bundle(self) -> dict[str, Any]:
        if len(self.entries) > MAX_ENTRIES:
            raise FixtureError(f"{self.scenario_id}: {len(self.entries)} entries > {MAX_ENTRIES}")
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


# ---------------------------------------------------------------------------------------------------------
# Scenario -> Bundle


def build_bundle(scenario: dict[str, Any], tables: CodeTables) -> dict[str, Any]:
    sid = str(scenario["id"])
    check_keys(sid, scenario, SCENARIO_KEYS)
    b = BundleBuilder(sid)
    add_patient(b, check_keys(f"{sid}.patient", scenario["patient"], PATIENT_KEYS))
    for i, dxa in enumerate(scenario.get("dxa") or []):
        add_dxa(b, check_keys(f"{sid}.dxa[{i}]", dxa, DXA_KEYS), tables)
    for i, frax in enumerate(scenario.get("frax") or []):
        add_frax(b, check_keys(f"{sid}.frax[{i}]", frax, FRAX_KEYS), tables)
    for i, lab in enumerate(scenario.get("labs") or []):
        add_lab(b, check_keys(f"{sid}.labs[{i}]", lab, LAB_KEYS), tables)
    for date in scenario.get("dxa_pdf") or []:
        add_dxa_pdf(b, str(date), tables)
    for i, cond in enumerate(scenario.get("conditions") or []):
        add_condition(b, check_keys(f"{sid}.conditions[{i}]", cond, CONDITION_KEYS), tables)
    for i, proc in enumerate(scenario.get("procedures") or []):
        add_procedure(b, check_keys(f"{sid}.procedures[{i}]", proc, PROCEDURE_KEYS), tables)
    for i, med in enumerate(scenario.get("medications") or []):
        add_medication(b, check_keys(f"{sid}.medications[{i}]", med, MED_KEYS), tables)
    return b.bundle()


def add_patient(b: BundleBuilder, patient: dict[str, Any]) -> None:
    if patient["sex"] not in {"female", "male", "other", "unknown"}:
        raise FixtureError(f"{b.scenario_id}: unknown sex {patient['sex']!r}")
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": b.scenario_id,
        "gender": patient["sex"],
        "birthDate": str(patient["birth_date"]),
    }
    if patient.get("deceased"):
        resource["deceasedDateTime"] = str(patient["deceased"])
    b.add(resource)


def add_dxa(b: BundleBuilder, dxa: dict[str, Any], tables: CodeTables) -> None:
    sites = check_keys(f"{b.scenario_id}.dxa.sites", dxa["sites"], DXA_SITE_KEYS)
    for site, measures in sites.items():
        check_keys(f"{b.scenario_id}.dxa.sites.{site}", measures, DXA_MEASURE_KEYS)
        for measure, value in measures.items():
            kind, unit, ucum = DXA_MEASURE[measure]
            code, display = tables.observation(kind, DXA_TABLE_SITE[site])
            text = display.replace("DXA Femur ", "DXA Femoral neck ") if site == "femoral_neck" else display
            resource: dict[str, Any] = {
                "resourceType": "Observation",
                "id": b.next_id("obs"),
                "status": "final",
                "category": category("imaging", "Imaging"),
                "code": {"coding": [coding(LOINC, code, display)], "text": text},
                "subject": b.subject,
                "effectiveDateTime": str(dxa["date"]),
                "valueQuantity": quantity(value, unit, ucum),
            }
            if site == "femoral_neck":
                site_code, site_display = tables.observation(*FEMORAL_NECK_BODY_SITE, system=SNOMED)
                resource["bodySite"] = {
                    "coding": [coding(SNOMED, site_code, site_display)],
                    "text": "Femoral neck",
                }
            resource["device"] = {"display": str(dxa["device"])}
            b.add(resource)


def add_frax(b: BundleBuilder, frax: dict[str, Any], tables: CodeTables) -> None:
    for key, kind in (("mof", "frax_mof"), ("hip", "frax_hip")):
        if key not in frax:
            continue
        code, display = tables.observation(kind)
        b.add(
            {
                "resourceType": "Observation",
                "id": b.next_id("obs"),
                "status": "final",
                "category": category("survey", "Survey"),
                "code": {"coding": [coding(LOINC, code, display)], "text": display},
                "subject": b.subject,
                "effectiveDateTime": str(frax["date"]),
                "valueQuantity": quantity(frax[key], "%", "%"),
            }
        )


def add_lab(b: BundleBuilder, lab: dict[str, Any], tables: CodeTables) -> None:
    kind = lab["kind"]
    if kind not in LAB_CODE:
        raise FixtureError(f"{b.scenario_id}: no lab code for kind {kind!r}")
    code, display = tables.observation_by_code(LAB_CODE[kind], kind)
    unit = str(lab["unit"])
    ucum = UCUM_UNITS.get(unit)
    if ucum is None:
        raise FixtureError(f"{b.scenario_id}: unit {unit!r} has no UCUM mapping")
    if ucum != tables.observation_unit(kind):
        raise FixtureError(
            f"{b.scenario_id}: {kind} in {unit!r} does not fit LOINC {code} ({tables.observation_unit(kind)})"
        )
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": b.next_id("obs"),
        "status": "final",
        "category": category("laboratory", "Laboratory"),
        "code": {"coding": [coding(LOINC, code, display)], "text": display},
        "subject": b.subject,
        "effectiveDateTime": str(lab["date"]),
        "valueQuantity": quantity(lab["value"], unit, ucum),
    }
    ref_range: dict[str, Any] = {}
    if lab.get("ref_low") is not None:
        ref_range["low"] = quantity(lab["ref_low"], unit, ucum)
    if lab.get("ref_high") is not None:
        ref_range["high"] = quantity(lab["ref_high"], unit, ucum)
    if ref_range:
        resource["referenceRange"] = [ref_range]
    b.add(resource)


def add_dxa_pdf(b: BundleBuilder, date: str, tables: CodeTables) -> None:
    code, display = tables.observation("dxa_report", "skeletal_system")
    pdf = tiny_pdf(f"Bone densitometry DXA report {date} - scanned document, no discrete results")
    b.add(
        {
            "resourceType": "DiagnosticReport",
            "id": b.next_id("dxarpt"),
            "status": "final",
            "category": [{"coding": [coding(V2_0074, "RAD", "Radiology")]}],
            "code": {"coding": [coding(LOINC, code, display)], "text": "DXA bone density report"},
            "subject": b.subject,
            "effectiveDateTime": date,
            "presentedForm": [
                {
                    "contentType": "application/pdf",
                    "data": base64.b64encode(pdf).decode("ascii"),
                    "title": f"DXA report {date}",
                    "creation": date,
                }
            ],
        }
    )


def add_condition(b: BundleBuilder, cond: dict[str, Any], tables: CodeTables) -> None:
    system = CONDITION_SYSTEMS.get(str(cond["system"]))
    if system is None:
        raise FixtureError(f"{b.scenario_id}: unknown condition system {cond['system']!r}")
    code = str(cond["code"])
    tables.check_condition(system, code)
    clinical = str(cond.get("clinical_status", "active"))
    verification = str(cond.get("verification_status", "confirmed"))
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": b.next_id("cond"),
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": clinical}]},
        "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": verification}]},
        "category": [{"coding": [coding(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")]}],
        "code": {"coding": [coding(system, code, str(cond["display"]))], "text": str(cond["display"])},
        "subject": b.subject,
    }
    if cond.get("onset"):
        resource["onsetDateTime"] = str(cond["onset"])
    if cond.get("recorded_date"):
        resource["recordedDate"] = str(cond["recorded_date"])
    b.add(resource)


def add_procedure(b: BundleBuilder, proc: dict[str, Any], tables: CodeTables) -> None:
    system = CONDITION_SYSTEMS.get(str(proc["system"]))
    if system is None:
        raise FixtureError(f"{b.scenario_id}: unknown procedure system {proc['system']!r}")
    code = str(proc["code"])
    tables.check_condition(system, code)
    b.add(
        {
            "resourceType": "Procedure",
            "id": b.next_id("proc"),
            "status": "completed",
            "code": {"coding": [coding(system, code, str(proc["display"]))], "text": str(proc["display"])},
            "subject": b.subject,
            "performedDateTime": str(proc["date"]),
        }
    )


def medication_concept(drug: str, tables: CodeTables) -> tuple[dict[str, Any], Product]:
    product = PRODUCTS.get(drug)
    if product is None:
        raise FixtureError(f"no coding rule for drug string {drug!r} (add it to PRODUCTS)")
    display = tables.medication_display(product.system, product.code)
    return {"coding": [coding(product.system, product.code, display)], "text": drug}, product


def dosage(product: Product, *, with_timing: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {"text": product.dosage_text}
    if with_timing:
        result["timing"] = {"repeat": dict(product.timing)}
    result["route"] = {"text": product.route}
    if product.dose is not None:
        value, unit, ucum = product.dose
        result["doseAndRate"] = [{"doseQuantity": quantity(value, unit, ucum)}]
    return result


def add_medication(b: BundleBuilder, med: dict[str, Any], tables: CodeTables) -> None:
    concept, product = medication_concept(str(med["drug"]), tables)
    kind = med["resource"]
    start = str(med["start"]) if med.get("start") else None
    end = str(med["end"]) if med.get("end") else None
    period: dict[str, str] = {}
    if start:
        period["start"] = start
    if end:
        period["end"] = end
    by_kind = {
        "MedicationStatement": ("start", "end"),
        "MedicationRequest": ("start", "end"),
        "MedicationAdministration": ("administrations",),
        "MedicationDispense": ("dispenses",),
    }
    if kind not in by_kind:
        raise FixtureError(f"{b.scenario_id}: unknown medication resource {kind!r}")
    extra = {k for k in med if k not in {"drug", "resource", *by_kind[kind]}}
    if extra or not all(k in med for k in by_kind[kind][:1]):
        raise FixtureError(
            f"{b.scenario_id}: {kind} for {med['drug']!r} needs {by_kind[kind]}, got {sorted(med)}"
        )

    if kind == "MedicationStatement":
        b.add(
            {
                "resourceType": "MedicationStatement",
                "id": b.next_id("medstmt"),
                "status": "active" if end is None else "completed",
                "medicationCodeableConcept": concept,
                "subject": b.subject,
                "effectivePeriod": period,
                "dosage": [dosage(product)],
            }
        )
    elif kind == "MedicationRequest":
        b.add(
            {
                "resourceType": "MedicationRequest",
                "id": b.next_id("medreq"),
                "status": "active" if end is None else "completed",
                "intent": "order",
                "medicationCodeableConcept": concept,
                "subject": b.subject,
                "authoredOn": start,
                "dosageInstruction": [dosage(product)],
                "dispenseRequest": {"validityPeriod": period},
            }
        )
    elif kind == "MedicationAdministration":
        admin_dosage = dosage(product, with_timing=False)
        dose = admin_dosage.pop("doseAndRate", None)
        if dose:
            admin_dosage["dose"] = dose[0]["doseQuantity"]
        for date in med["administrations"]:
            b.add(
                {
                    "resourceType": "MedicationAdministration",
                    "id": b.next_id("medadmin"),
                    "status": "completed",
                    "medicationCodeableConcept": concept,
                    "subject": b.subject,
                    "effectiveDateTime": str(date),
                    "dosage": admin_dosage,
                }
            )
    else:
        for i, dispense in enumerate(med["dispenses"]):
            check_keys(f"{b.scenario_id}.dispenses[{i}]", dispense, DISPENSE_KEYS)
            days = int(dispense["days_supply"])
            if days % product.interval_days:
                raise FixtureError(
                    f"{b.scenario_id}: {days} days is not a whole number of doses of {med['drug']!r}"
                )
            units = days // product.interval_days * product.units_per_dose
            b.add(
                {
                    "resourceType": "MedicationDispense",
                    "id": b.next_id("meddisp"),
                    "status": "completed",
                    "medicationCodeableConcept": concept,
                    "subject": b.subject,
                    "quantity": {"value": units, "unit": product.unit_name},
                    "daysSupply": quantity(days, "d", "d"),
                    "whenHandedOver": str(dispense["date"]),
                    "dosageInstruction": [dosage(product)],
                }
            )


# ---------------------------------------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scenarios",
        type=Path,
        nargs="?",
        default=SCENARIOS_YAML,
        help="scenarios YAML (default: fhir_fixtures/scenarios.yaml)",
    )
    parser.add_argument(
        "--codes",
        type=Path,
        default=CODES_DIR,
        help="directory with observations/medications/conditions.csv (default: the packaged tables)",
    )
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help="output directory (default: fhir_fixtures/)"
    )
    args = parser.parse_args(argv)

    scenarios = yaml.safe_load(args.scenarios.read_text(encoding="utf-8"))
    tables = CodeTables.load(args.codes)

    keys: collections.Counter[str] = collections.Counter()
    for scenario in scenarios:
        key_paths(scenario, "", keys)
    print(f"{len(scenarios)} scenarios; YAML keys (occurrences):")
    for path, count in sorted(keys.items()):
        print(f"  {path}: {count}")

    ids = [str(s["id"]) for s in scenarios]
    if len(set(ids)) != len(ids):
        raise FixtureError(f"duplicate scenario ids: {[i for i in ids if ids.count(i) > 1]}")

    scenario_dir = args.out / "scenarios"
    bundles: dict[str, dict[str, Any]] = {}
    for scenario in scenarios:
        sid = str(scenario["id"])
        bundle = build_bundle(scenario, tables)
        bundles[sid] = bundle
        write_json(scenario_dir / f"{sid}.json", bundle)
    for stale in sorted(scenario_dir.glob("*.json")):
        if stale.stem not in bundles and stale.name != "index.json":
            stale.unlink()
            print(f"removed stale {stale}")
    index = [
        {"id": str(s["id"]), "title": s["title"], "as_of": str(s["as_of"]), "expect": s["expect"]}
        for s in scenarios
    ]
    write_json(scenario_dir / "index.json", index)

    for sid, label in DEMO_SCENARIOS.items():
        request = hook_request_for_bundle(
            bundles[sid], with_prefetch=True, fhir_server=None, access_token=None
        )
        write_json(args.out / "demo" / f"{sid}-patient-view.json", request)
        print(f"demo {sid} ({label}): {args.out / 'demo' / f'{sid}-patient-view.json'}")

    sizes = {sid: len(bundle["entry"]) for sid, bundle in bundles.items()}
    largest = max(sizes, key=lambda k: sizes[k])
    print(
        f"wrote {len(bundles)} bundles to {scenario_dir} (largest: {largest}, {sizes[largest]} entries;"
        f" limit {MAX_ENTRIES})"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FixtureError as exc:
        print(f"gen_fixtures: error: {exc}", file=sys.stderr)
        sys.exit(1)
