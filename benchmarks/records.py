# ruff: noqa: E501 - tables of codes and resource templates
"""Synthetic patient-view requests from a fixed seed, at named sizes.

Every record tells the same clinical story as demo scenario s01 (a woman on alendronate for about
four years whose DXA targets were missed, so the service answers ESCALATE with cards), surrounded by
the clutter of ten years of ordinary care: other drugs, other diagnoses, other labs, vital signs.
Dates are placed relative to `as_of` (the evaluation date, today by default), so the story and the
byte sizes stay the same whenever the benchmark runs.

Sizes (resource counts; byte sizes are measured and reported, not assumed):
  small      the committed demo request for s01 (fhir_fixtures/demo)
  realistic  10 years of care: 8 DXA scans (4 Observations each), 150 medication records,
             120 conditions, 400 labs (40 % in the protocol's tables)           ~0.5 MB
  heavy      realistic + every other Observation an EHR holds (1,000 vital signs and 400 more labs)
             in the `labs` key, as when the EHR ignores the code filter        ~1.5 MB, 2,000+
  broad      the same clinical core in a broad prefetch: ~95 % of resources are irrelevant
             (other drugs, diagnoses, labs, vitals, procedures, allergies)    ~1.5 MB
  scale-N    `realistic` with every resource count multiplied by N/10 (linearity check)
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_REQUEST = REPO_ROOT / "fhir_fixtures" / "demo" / "s01-patient-view.json"
SEED = 20_261_130
EHR_BASE = "https://ehr.example.org/fhir"
SIZES = ("small", "realistic", "heavy", "broad")
DEMO_AS_OF = date(2025, 6, 1)  # the as_of of scenario s01 (fhir_fixtures/scenarios/index.json)
_ISO_DAY = re.compile(r"^(\d{4}-\d{2}-\d{2})")

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# (code, display, unit, ucum, low, high, normal_low, normal_high) -- relevant: in observations.csv.
RELEVANT_LABS = (
    ("33914-3", "Glomerular filtration rate/1.73 sq M.predicted", "mL/min/1.73m2", "mL/min/{1.73_m2}",
     62, 88, 60, 120),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 8.8, 10.0, 8.5, 10.2),
    ("6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma", "U/L", "U/L",
     55, 110, 40, 120),
    ("62292-8", "25-Hydroxyvitamin D2+25-Hydroxyvitamin D3 [Mass/volume] in Serum or Plasma", "ng/mL",
     "ng/mL", 31, 48, 30, 100),
    ("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", "g/dL", 3.6, 4.8, 3.5, 5.2),
)  # fmt: skip
OTHER_LABS = (
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "%", 5.6, 7.4, 4.0, 5.6),
    ("13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation", "mg/dL", "mg/dL",
     70, 160, 0, 100),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 150, 240, 0, 200),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", "g/dL", 11.8, 14.6, 12.0, 15.5),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", "10*3/uL", 4.2, 9.8, 4.0,
     11.0),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", "10*3/uL", 160, 360, 150, 400),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 136, 144, 135, 145),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 3.6, 5.0, 3.5, 5.1),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 0.6, 1.0, 0.5, 1.1),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 85, 150, 70, 99),
    ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", "m[IU]/L", 0.6, 3.8, 0.4, 4.0),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", "U/L",
     12, 38, 7, 35),
)  # fmt: skip
VITALS = (
    ("8867-4", "Heart rate", "/min", "/min", 58, 92),
    ("9279-1", "Respiratory rate", "/min", "/min", 12, 20),
    ("8310-5", "Body temperature", "Cel", "Cel", 36.2, 37.4),
    ("29463-7", "Body weight", "kg", "kg", 56, 64),
    ("8302-2", "Body height", "cm", "cm", 158, 160),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2", 22, 25),
    ("2708-6", "Oxygen saturation in Arterial blood", "%", "%", 94, 99),
)
# (rxnorm, display, text, dose text)
OTHER_DRUGS = (
    ("860975", "metformin hydrochloride 500 MG Oral Tablet", "metformin 500 mg tablet", "500 mg twice daily"),
    ("314076", "lisinopril 10 MG Oral Tablet", "lisinopril 10 mg tablet", "10 mg once daily"),
    ("617312", "atorvastatin 40 MG Oral Tablet", "atorvastatin 40 mg tablet", "40 mg at night"),
    ("197361", "amlodipine 5 MG Oral Tablet", "amlodipine 5 mg tablet", "5 mg once daily"),
    ("966222", "levothyroxine sodium 0.05 MG Oral Tablet", "levothyroxine 50 mcg tablet", "50 mcg daily"),
    ("198211", "simvastatin 40 MG Oral Tablet", "simvastatin 40 mg tablet", "40 mg at night"),
    ("310429", "furosemide 20 MG Oral Tablet", "furosemide 20 mg tablet", "20 mg in the morning"),
    ("197884", "lisinopril 40 MG Oral Tablet", "lisinopril 40 mg tablet", "40 mg once daily"),
    ("313782", "acetaminophen 325 MG Oral Tablet", "paracetamol 325 mg tablet", "2 tablets as needed"),
    ("1049221", "acetaminophen 325 MG / oxycodone 5 MG Oral Tablet", "pain tablet", "1 tablet as needed"),
    ("308136", "amlodipine 2.5 MG Oral Tablet", "amlodipine 2.5 mg tablet", "2.5 mg once daily"),
    ("311989", "nitrofurantoin 100 MG Oral Capsule", "nitrofurantoin 100 mg capsule", "100 mg twice daily"),
)  # fmt: skip
# (icd-10-cm, display): none is in the protocol's condition table, none is a fracture or cancer.
OTHER_CONDITIONS = (
    ("I10", "Essential (primary) hypertension"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("E03.9", "Hypothyroidism, unspecified"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
    ("M17.11", "Unilateral primary osteoarthritis, right knee"),
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("M54.50", "Low back pain, unspecified"),
    ("R51.9", "Headache, unspecified"),
    ("H52.4", "Presbyopia"),
    ("L30.9", "Dermatitis, unspecified"),
    ("J30.9", "Allergic rhinitis, unspecified"),
    ("F41.9", "Anxiety disorder, unspecified"),
    ("G47.00", "Insomnia, unspecified"),
)
OTHER_PROCEDURES = (
    ("73761001", "Colonoscopy"),
    ("268556000", "Mammography screening"),
    ("86198006", "Influenza vaccination"),
    ("252779009", "Single bolus injection"),
    ("29303009", "Electrocardiographic procedure"),
)
OTHER_ALLERGENS = (("7980", "Penicillin G"), ("10831", "Sulfamethoxazole"), ("2670", "Codeine"))
# One scan = lumbar spine T-score + total hip T-score + femoral neck T-score + lumbar spine BMD.
DXA_SITES = (
    ("38267-1", "DXA Lumbar spine [T-score] Bone density", "{T-score}", None),
    ("38264-8", "DXA Hip [T-score] Bone density", "{T-score}", None),
    ("38263-0", "DXA Femur [T-score] Bone density", "{T-score}", ("29627003", "Structure of neck of femur")),
    ("46383-6", "DXA Bone [Mass/Area] Bone density", "g/cm2", ("122496007", "Lumbar spine structure")),
)
# Years before as_of, and lumbar/hip/neck T-scores: flat or worse on alendronate (targets missed).
DXA_SCANS = (
    (9.6, -2.3, -2.0, -2.1),
    (8.1, -2.4, -2.1, -2.2),
    (6.6, -2.6, -2.3, -2.4),
    (5.6, -2.8, -2.5, -2.6),
    (4.30, -2.9, -2.6, -2.7),  # baseline, two weeks before alendronate starts
    (2.6, -2.8, -2.6, -2.7),
    (1.05, -2.7, -2.5, -2.6),  # follow-up, over 3 years on treatment
    (0.30, -2.8, -2.6, -2.6),
)
ALENDRONATE_START_YEARS = 4.26


@dataclass(frozen=True)
class Composition:
    """Resource counts of one synthetic record."""

    meds: int = 150
    conditions: int = 120
    labs: int = 400
    relevant_lab_share: float = 0.4
    vitals: int = 0
    extra_labs: int = 0
    procedures: int = 0
    allergies: int = 0
    relevant_meds: bool = True


COMPOSITIONS: dict[str, Composition] = {
    "realistic": Composition(),
    "heavy": Composition(vitals=1000, extra_labs=400),
    "broad": Composition(
        meds=400, conditions=300, labs=600, relevant_lab_share=0.04, vitals=700, procedures=40, allergies=3
    ),
}


def request_for(size: str, as_of: date | None = None, seed: int = SEED) -> dict[str, Any]:
    """The patient-view request (prefetch path) of a named size, or `scale-N` (N tenths of realistic)."""
    as_of = as_of or date.today()
    if size == "small":
        request: dict[str, Any] = json.loads(DEMO_REQUEST.read_text(encoding="utf-8"))
        return _redated(request, (as_of - DEMO_AS_OF).days)
    if size.startswith("scale-"):
        factor = int(size.removeprefix("scale-")) / 10
        base = COMPOSITIONS["realistic"]
        composition = Composition(
            meds=round(base.meds * factor),
            conditions=round(base.conditions * factor),
            labs=round(base.labs * factor),
        )
        return _Generator(
            f"bench-{size}", as_of, seed, composition, dxa_repeat=max(1, round(factor))
        ).request()
    return _Generator(f"bench-{size}", as_of, seed, COMPOSITIONS[size]).request()


def request_bytes(size: str, as_of: date | None = None, seed: int = SEED) -> bytes:
    """The request as compact JSON bytes (what an EHR sends)."""
    return json.dumps(request_for(size, as_of, seed), separators=(",", ":")).encode()


def counts(request: dict[str, Any]) -> dict[str, int]:
    """Resources per prefetch key, and in total."""
    out: dict[str, int] = {}
    for key, value in (request.get("prefetch") or {}).items():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            out[key] = len(value.get("entry") or [])
        elif value is not None:
            out[key] = 1
    out["total"] = sum(out.values())
    return out


class _Generator:
    def __init__(
        self, patient_id: str, as_of: date, seed: int, composition: Composition, dxa_repeat: int = 1
    ) -> None:
        self.pid = patient_id
        self.as_of = as_of
        self.rng = random.Random(f"{seed}/{patient_id}")
        self.c = composition
        self.dxa_repeat = dxa_repeat
        self.serial = 0

    # -- helpers ------------------------------------------------------------------------------------------
    def _id(self, kind: str) -> str:
        self.serial += 1
        return f"{self.pid}-{kind}-{self.serial}"

    def _day(self, years_ago: float) -> date:
        return self.as_of - timedelta(days=round(years_ago * 365.25))

    def _random_day(self, max_years: float = 10.0, min_years: float = 0.05) -> date:
        return self._day(self.rng.uniform(min_years, max_years))

    def _instant(self, day: date) -> str:
        return f"{day.isoformat()}T{self.rng.randrange(7, 18):02d}:{self.rng.randrange(60):02d}:00Z"

    def _meta(self, day: date) -> dict[str, Any]:
        return {
            "versionId": str(self.rng.randrange(1, 4)),
            "lastUpdated": f"{day.isoformat()}T12:00:00.000Z",
            "source": "#ehr-main",
        }

    def _subject(self) -> dict[str, Any]:
        return {"reference": f"Patient/{self.pid}"}

    def _encounter(self) -> dict[str, Any]:
        return {"reference": f"Encounter/{self.pid}-enc-{self.rng.randrange(1, 400)}"}

    def _practitioner(self) -> dict[str, Any]:
        n = self.rng.randrange(1, 40)
        return {"reference": f"Practitioner/pr-{n}", "display": f"Dr. Example {n}"}

    def _identifier(self, kind: str) -> list[dict[str, Any]]:
        return [
            {
                "system": f"urn:oid:2.16.840.1.113883.3.999.{kind}",
                "value": uuid.UUID(int=self.rng.getrandbits(128)).hex,
            }
        ]

    # -- resources ----------------------------------------------------------------------------------------
    def patient(self) -> dict[str, Any]:
        return {
            "resourceType": "Patient",
            "id": self.pid,
            "meta": self._meta(self._day(0.2)),
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.999.1", "value": "MRN-0042-77"}],
            "active": True,
            "name": [{"use": "official", "family": "Bench", "given": ["Jane", "Q"]}],
            "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
            "gender": "female",
            "birthDate": self._day(69.7).isoformat(),
            "address": [{"line": ["1 Example Street"], "city": "Springfield", "postalCode": "00000"}],
            "maritalStatus": {"text": "Married"},
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}}],
        }

    def dxa(self) -> Iterator[dict[str, Any]]:
        for years_ago, lumbar, hip, neck in DXA_SCANS:
            for repeat in range(self.dxa_repeat):
                day = self._day(years_ago + repeat * 0.003)
                scores = (lumbar, hip, neck, round(0.78 + (lumbar + 2.5) * 0.1, 3))
                for (code, display, unit, site), value in zip(DXA_SITES, scores, strict=True):
                    obs = self._observation(day, "imaging", code, display)
                    obs["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
                    if site is not None:
                        obs["bodySite"] = {
                            "coding": [{"system": SNOMED, "code": site[0], "display": site[1]}]
                        }
                    obs["device"] = {"display": "DXA-1 Hologic Horizon A (SN 1001)"}
                    yield obs

    def _observation(self, day: date, category: str, code: str, display: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": self._id("obs"),
            "status": "final",
            "category": [
                {"coding": [{"system": OBS_CATEGORY, "code": category, "display": category.title()}]}
            ],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": self._subject(),
            "encounter": self._encounter(),
            "effectiveDateTime": self._instant(day),
        }

    def lab(self, table: tuple[Any, ...], day: date | None = None) -> dict[str, Any]:
        code, display, unit, ucum, low, high, normal_low, normal_high = self.rng.choice(table)
        day = day or self._random_day()
        obs = self._observation(day, "laboratory", code, display)
        value = round(self.rng.uniform(low, high), 1)
        obs["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": ucum}
        obs["referenceRange"] = [
            {"low": {"value": normal_low, "unit": unit}, "high": {"value": normal_high, "unit": unit}}
        ]
        return obs

    def vital(self) -> dict[str, Any]:
        day = self._random_day()
        if self.rng.random() < 0.25:
            obs = self._observation(day, "vital-signs", "85354-9", "Blood pressure panel")
            obs["component"] = [
                {
                    "code": {"coding": [{"system": LOINC, "code": code, "display": name}]},
                    "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
                }
                for code, name, value in (
                    ("8480-6", "Systolic blood pressure", self.rng.randrange(112, 150)),
                    ("8462-4", "Diastolic blood pressure", self.rng.randrange(66, 92)),
                )
            ]
            return obs
        code, display, unit, ucum, low, high = self.rng.choice(VITALS)
        obs = self._observation(day, "vital-signs", code, display)
        obs["valueQuantity"] = {
            "value": round(self.rng.uniform(low, high), 1),
            "unit": unit,
            "system": UCUM,
            "code": ucum,
        }
        return obs

    def labs(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        # The newest relevant panel, two months ago: every kind in range (no lab warning).
        recent = self._day(0.17)
        for row in RELEVANT_LABS:
            out.append(self.lab((row,), recent))
        total = self.c.labs + self.c.extra_labs
        for _ in range(max(0, total - len(out))):
            table = RELEVANT_LABS if self.rng.random() < self.c.relevant_lab_share else OTHER_LABS
            out.append(self.lab(table, self._random_day(10.0, 0.2)))
        out.extend(self.vital() for _ in range(self.c.vitals))
        return out

    def _med_common(self, rtype: str, kind: str, day: date) -> dict[str, Any]:
        return {"resourceType": rtype, "id": self._id(kind)}

    def _concept(self, code: str, display: str, text: str) -> dict[str, Any]:
        return {"coding": [{"system": RXNORM, "code": code, "display": display}], "text": text}

    def medication_records(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {
            "MedicationStatement": [], "MedicationRequest": [], "MedicationDispense": [], "MedicationAdministration": []
        }  # fmt: skip
        start = self._day(ALENDRONATE_START_YEARS)
        alendronate = self._concept(
            "904431", "alendronic acid 70 MG Oral Tablet", "alendronate 70 mg oral tablet weekly"
        )
        calcium = {
            "coding": [{"system": "http://www.whocc.no/atc", "code": "A12AX",
                        "display": "Calcium, combinations with vitamin D and/or other drugs"}],
            "text": "calcium carbonate 500 mg / cholecalciferol 400 IU oral tablet daily",
        }  # fmt: skip
        budget = self.c.meds
        if self.c.relevant_meds:
            stmt = self._med_common("MedicationStatement", "ms", start)
            stmt.update(
                status="active", medicationCodeableConcept=alendronate, subject=self._subject(),
                effectivePeriod={"start": start.isoformat()}, dateAsserted=start.isoformat(),
                dosage=[{"text": "70 mg by mouth once weekly",
                         "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk"}},
                         "route": {"text": "oral"},
                         "doseAndRate": [{"doseQuantity": {"value": 70, "unit": "mg", "system": UCUM, "code": "mg"}}]}],
            )  # fmt: skip
            supplement = self._med_common("MedicationStatement", "ms", self._day(5.0))
            supplement.update(
                status="active", medicationCodeableConcept=calcium, subject=self._subject(),
                effectivePeriod={"start": self._day(5.0).isoformat()},
                dosage=[{"text": "1 tablet by mouth once daily", "route": {"text": "oral"}}],
            )  # fmt: skip
            out["MedicationStatement"] += [stmt, supplement]
            budget -= 2
            # Alendronate orders and fills every 90 days since the start.
            day = start
            while day < self.as_of - timedelta(days=30) and budget >= 2:
                out["MedicationRequest"].append(
                    self._request(day, alendronate, "70 mg by mouth once weekly", 12)
                )
                out["MedicationDispense"].append(self._dispense(day + timedelta(days=2), alendronate, 12, 84))
                budget -= 2
                day += timedelta(days=90)
        while budget > 0:
            code, display, text, dose = self.rng.choice(OTHER_DRUGS)
            concept = self._concept(code, display, text)
            day = self._random_day()
            if self.rng.random() < 0.5:
                out["MedicationRequest"].append(self._request(day, concept, dose, 90))
            elif self.rng.random() < 0.8:
                out["MedicationDispense"].append(self._dispense(day, concept, 90, 90))
            else:
                stmt = self._med_common("MedicationStatement", "ms", day)
                stmt.update(
                    status=self.rng.choice(("active", "completed")), medicationCodeableConcept=concept,
                    subject=self._subject(), effectivePeriod={"start": day.isoformat()},
                    dosage=[{"text": dose}],
                )  # fmt: skip
                out["MedicationStatement"].append(stmt)
            budget -= 1
        return out

    def _request(self, day: date, concept: dict[str, Any], dose: str, quantity: int) -> dict[str, Any]:
        req = self._med_common("MedicationRequest", "mr", day)
        req.update(
            status="completed" if day < self.as_of - timedelta(days=90) else "active",
            intent="order",
            medicationCodeableConcept=concept,
            subject=self._subject(),
            encounter=self._encounter(),
            authoredOn=day.isoformat(),
            requester=self._practitioner(),
            dosageInstruction=[{"text": dose, "route": {"text": "oral"}}],
            dispenseRequest={
                "numberOfRepeatsAllowed": 0,
                "quantity": {"value": quantity, "unit": "tablet", "system": UCUM, "code": "{tbl}"},
                "expectedSupplyDuration": {"value": 90, "unit": "days", "system": UCUM, "code": "d"},
            },
        )
        return req

    def _dispense(self, day: date, concept: dict[str, Any], quantity: int, days: int) -> dict[str, Any]:
        disp = self._med_common("MedicationDispense", "md", day)
        disp.update(
            status="completed",
            medicationCodeableConcept=concept,
            subject=self._subject(),
            performer=[{"actor": {"display": "Community Pharmacy"}}],
            quantity={"value": quantity, "unit": "tablet", "system": UCUM, "code": "{tbl}"},
            daysSupply={"value": days, "unit": "days", "system": UCUM, "code": "d"},
            whenPrepared=self._instant(day),
            whenHandedOver=self._instant(day),
            dosageInstruction=[{"text": "as directed"}],
        )
        return disp

    def conditions(self) -> list[dict[str, Any]]:
        out = []
        for index in range(self.c.conditions):
            if index < 2 and self.c.relevant_meds:
                code, display = ("M81.0", "Age-related osteoporosis without current pathological fracture")
            else:
                code, display = self.rng.choice(OTHER_CONDITIONS)
            day = self._random_day()
            out.append(
                {
                    "resourceType": "Condition",
                    "id": self._id("cond"),
                    "clinicalStatus": {"coding": [{"system": CLINICAL_STATUS, "code": "active"}]},
                    "verificationStatus": {"coding": [{"system": VERIFICATION_STATUS, "code": "confirmed"}]},
                    "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "encounter-diagnosis"}]}],
                    "code": {"coding": [{"system": ICD10CM, "code": code, "display": display}]},
                    "subject": self._subject(),
                    "encounter": self._encounter(),
                    "onsetDateTime": day.isoformat(),
                    "recordedDate": day.isoformat(),
                }
            )
        return out

    def procedures(self) -> list[dict[str, Any]]:
        out = []
        for _ in range(self.c.procedures):
            code, display = self.rng.choice(OTHER_PROCEDURES)
            day = self._random_day()
            out.append(
                {
                    "resourceType": "Procedure", "id": self._id("proc"), "meta": self._meta(day),
                    "status": "completed",
                    "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
                    "subject": self._subject(), "encounter": self._encounter(),
                    "performedDateTime": day.isoformat(), "performer": [{"actor": self._practitioner()}],
                }
            )  # fmt: skip
        return out

    def allergies(self) -> list[dict[str, Any]]:
        out = []
        for code, display in OTHER_ALLERGENS[: self.c.allergies]:
            day = self._random_day()
            out.append(
                {
                    "resourceType": "AllergyIntolerance", "id": self._id("alg"), "meta": self._meta(day),
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
                    "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
                    "code": {"coding": [{"system": RXNORM, "code": code, "display": display}], "text": display},
                    "patient": self._subject(), "recordedDate": day.isoformat(),
                    "reaction": [{"manifestation": [{"text": "rash"}], "severity": "mild"}],
                }
            )  # fmt: skip
        return out

    # -- the request --------------------------------------------------------------------------------------
    def request(self) -> dict[str, Any]:
        meds = self.medication_records()
        prefetch: dict[str, Any] = {
            "patient": self.patient(),
            "dxa": _searchset(sorted(self.dxa(), key=_effective, reverse=True), "Observation"),
            "labs": _searchset(sorted(self.labs(), key=_effective, reverse=True), "Observation"),
            "conditions": _searchset(self.conditions(), "Condition"),
            "procedures": _searchset(self.procedures(), "Procedure"),
            "allergies": _searchset(self.allergies(), "AllergyIntolerance"),
            "medicationStatements": _searchset(meds["MedicationStatement"], "MedicationStatement"),
            "medicationRequests": _searchset(meds["MedicationRequest"], "MedicationRequest"),
            "medicationAdministrations": _searchset(
                meds["MedicationAdministration"], "MedicationAdministration"
            ),
            "medicationDispenses": _searchset(meds["MedicationDispense"], "MedicationDispense"),
        }
        return {
            "hook": "patient-view",
            "hookInstance": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "context": {"userId": "Practitioner/demo-1", "patientId": self.pid},
            "prefetch": prefetch,
        }


def _redated(value: Any, shift_days: int) -> Any:
    """`value` with every date moved by `shift_days` (the demo keeps its story on any run date)."""
    if isinstance(value, dict):
        return {key: _redated(item, shift_days) for key, item in value.items()}
    if isinstance(value, list):
        return [_redated(item, shift_days) for item in value]
    if isinstance(value, str) and (match := _ISO_DAY.match(value)):
        try:
            day = date.fromisoformat(match.group(1)) + timedelta(days=shift_days)
        except ValueError:
            return value
        return day.isoformat() + value[10:]
    return value


def _effective(resource: dict[str, Any]) -> str:
    return str(resource.get("effectiveDateTime") or "")


def _searchset(resources: list[dict[str, Any]], rtype: str) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{rtype}/{len(resources)}").hex,
        "type": "searchset",
        "total": len(resources),
        "link": [{"relation": "self", "url": f"{EHR_BASE}/{rtype}?patient=..."}],
    }
    if resources:
        bundle["entry"] = [
            {
                "fullUrl": f"{EHR_BASE}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ]
    return bundle
