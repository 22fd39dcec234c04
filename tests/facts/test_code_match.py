"""facts.code_match: code systems, ICD categories, cancer, fracture sites and names (protocol §3b, §3c)."""

from __future__ import annotations

import pytest

from cds_service.facts.code_match import (
    canonical_system,
    icd_cm_initial_encounter,
    icd_fracture_site,
    ingredient_in_text,
    ingredients_in_text,
    is_history_code,
    is_icd_cancer,
    is_osteoporotic_icd,
    is_snomed_malignancy,
    medication_roles,
    normalise_code,
    site_of_fracture_concepts,
    snomed_fracture_site,
)
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import ATC, ICD10, ICD10CM, LOINC, RXNORM, SNOMED


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        pytest.param("urn:oid:2.16.840.1.113883.6.90", ICD10CM, id="icd-10-cm-oid"),
        pytest.param("urn:oid:2.16.840.1.113883.6.3", ICD10, id="who-icd-10-oid"),
        pytest.param("urn:oid:2.16.840.1.113883.6.96", SNOMED, id="snomed-oid"),
        pytest.param("urn:oid:2.16.840.1.113883.6.1", LOINC, id="loinc-oid"),
        pytest.param("urn:oid:2.16.840.1.113883.6.88", RXNORM, id="rxnorm-oid"),
        pytest.param("urn:oid:2.16.840.1.113883.6.73", ATC, id="atc-oid"),
        pytest.param("http://snomed.info/sct/", SNOMED, id="trailing-slash"),
        pytest.param(" http://loinc.org ", LOINC, id="padded"),
        pytest.param(
            "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.7",
            "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.7",
            id="local-epic-oid-kept",
        ),
        pytest.param(None, "", id="no-system"),
        pytest.param("", "", id="empty-system"),
    ],
)
def test_canonical_system(system: str | None, expected: str) -> None:
    assert canonical_system(system) == expected


@pytest.mark.protocol("3b-icd-category")
@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        pytest.param(ICD10CM, "s72001a", "S72.001A", id="cm-lower-case-without-dot"),
        pytest.param(ICD10CM, "M80.08XA", "M80.08XA", id="cm-already-dotted"),
        pytest.param(ICD10, "M880", "M88.0", id="who-without-dot"),
        pytest.param(ICD10, "C50", "C50", id="bare-category"),
        pytest.param(ICD10, " n18.5 ", "N18.5", id="padded"),
        pytest.param(SNOMED, " 64859006 ", "64859006", id="snomed-only-trimmed"),
        pytest.param(LOINC, "38264-8", "38264-8", id="loinc-untouched"),
        pytest.param(ICD10, None, "", id="no-code"),
    ],
)
def test_normalise_code(system: str, code: str | None, expected: str) -> None:
    assert normalise_code(system, code) == expected


@pytest.mark.protocol("3b-cancer")
@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        pytest.param(ICD10, "C00.0", True, id="c00-first-malignant-category"),
        pytest.param(ICD10CM, "C50.911", True, id="breast-cancer-cm"),
        pytest.param(ICD10, "C79.5", True, id="secondary-malignancy-of-bone"),
        pytest.param(ICD10, "C96.9", True, id="c96-last-malignant-category"),
        # ICD-10-CM's malignant-neoplasm block C00-C96 also holds the categories C4A (Merkel cell
        # carcinoma), C7A (malignant neuroendocrine tumors) and C7B (secondary neuroendocrine tumors).
        pytest.param(ICD10CM, "C4A.9", True, id="cm-merkel-cell-carcinoma"),
        pytest.param(ICD10CM, "C7A.00", True, id="cm-malignant-carcinoid"),
        pytest.param(ICD10CM, "C7B.03", True, id="cm-secondary-carcinoid-of-bone"),
        pytest.param(ICD10, "C97", False, id="c97-outside-protocol-range"),
        pytest.param(ICD10, "D05.1", False, id="carcinoma-in-situ"),
        pytest.param(ICD10CM, "D3A.00", False, id="cm-benign-carcinoid"),
        pytest.param(ICD10CM, "Z85.3", False, id="history-of-breast-cancer"),
        pytest.param(SNOMED, "C50", False, id="not-an-icd-system"),
    ],
)
def test_icd_cancer(system: str, code: str, expected: bool) -> None:
    assert is_icd_cancer(system, code) is expected


@pytest.mark.protocol("3b-cancer")
@pytest.mark.parametrize(
    ("system", "display", "expected"),
    [
        pytest.param(SNOMED, "Malignant neoplasm of breast", True, id="malignant-neoplasm"),
        pytest.param(SNOMED, "Secondary malignant neoplasm of bone", True, id="bone-metastasis"),
        pytest.param(SNOMED, "Benign neoplasm of bone", False, id="benign"),
        pytest.param(ICD10, "Malignant neoplasm of breast", False, id="icd-display-not-read-here"),
    ],
)
def test_snomed_malignancy(system: str, display: str, expected: bool) -> None:
    assert is_snomed_malignancy(system, display) is expected


@pytest.mark.protocol("3b-fractures", "3b-icd-category")
@pytest.mark.parametrize(
    ("system", "code", "site"),
    [
        pytest.param(ICD10CM, "S72.001A", "hip_femur", id="cm-femoral-neck"),
        pytest.param(ICD10, "S72.0", "hip_femur", id="who-femoral-neck-same-category"),
        pytest.param(ICD10CM, "S22.000A", "vertebra", id="cm-thoracic-vertebra"),
        pytest.param(ICD10CM, "S32.010A", "vertebra", id="cm-lumbar-vertebra"),
        pytest.param(ICD10, "M48.5", "vertebra", id="collapsed-vertebra"),
        pytest.param(ICD10CM, "S52.501A", "forearm", id="cm-distal-radius"),
        pytest.param(ICD10CM, "S42.201A", "humerus", id="cm-proximal-humerus"),
        pytest.param(ICD10CM, "S42.001A", "clavicle", id="cm-clavicle"),
        pytest.param(ICD10CM, "S22.31XA", "rib", id="cm-rib"),
        pytest.param(ICD10CM, "S32.401A", "pelvis", id="cm-acetabulum"),
        pytest.param(ICD10CM, "S82.001A", "other", id="cm-patella-not-counted"),
        pytest.param(ICD10CM, "S82.101A", "tibia_ankle", id="cm-proximal-tibia"),
        pytest.param(ICD10CM, "M80.08XA", "vertebra", id="cm-osteoporotic-vertebra"),
        pytest.param(ICD10CM, "M80.051A", "hip_femur", id="cm-osteoporotic-femur"),
        pytest.param(ICD10CM, "M80.00XA", "unspecified", id="cm-osteoporotic-unspecified-site"),
        pytest.param(ICD10, "M80.05", "hip_femur", id="who-osteoporotic-thigh"),
        pytest.param(ICD10, "M80.08", "unspecified", id="who-osteoporotic-other-site-not-vertebral"),
        pytest.param(ICD10CM, "S02.0XXA", None, id="skull-not-a-counted-site"),
        pytest.param(ICD10CM, "S62.001A", None, id="hand-not-listed"),
        pytest.param(SNOMED, "S72.0", None, id="not-an-icd-system"),
    ],
)
def test_icd_fracture_site(system: str, code: str, site: str | None, knowledge: Knowledge) -> None:
    assert icd_fracture_site(system, code, knowledge) == site


@pytest.mark.protocol("3b-fractures")
@pytest.mark.parametrize(
    ("display", "site"),
    [
        pytest.param("Fracture of neck of femur", "hip_femur", id="femoral-neck"),
        pytest.param("Closed fracture of hip", "hip_femur", id="hip"),
        pytest.param("Fracture of vertebral column", "vertebra", id="vertebral"),
        pytest.param("Fracture of lumbar spine", "vertebra", id="spine"),
        pytest.param("Colles' fracture", "forearm", id="colles"),
        pytest.param("Fracture of distal end of radius", "forearm", id="radius"),
        pytest.param("Fracture of wrist", "forearm", id="wrist"),
        pytest.param("Fracture of proximal humerus", "humerus", id="humerus"),
        pytest.param("Fracture of rib", "rib", id="rib"),
        pytest.param("Fracture of multiple ribs", "rib", id="ribs-plural"),
        pytest.param("Fracture of clavicle", "clavicle", id="clavicle"),
        pytest.param("Fracture of sacrum", "pelvis", id="sacrum"),
        pytest.param("Fracture of ankle", "tibia_ankle", id="ankle"),
        pytest.param("Fracture of skull", "other", id="skull-not-counted"),
        pytest.param("Fracture of finger", "other", id="finger-not-counted"),
        pytest.param("Fracture of toe", "other", id="toe-not-counted"),
        pytest.param("Fracture of mandible", None, id="no-site-word"),
    ],
)
def test_snomed_fracture_site(display: str, site: str | None, knowledge: Knowledge) -> None:
    assert snomed_fracture_site(display, knowledge) == site


@pytest.mark.parametrize(
    ("concepts", "site"),
    [
        pytest.param(frozenset({"hip_fracture"}), "hip_femur", id="hip"),
        pytest.param(frozenset({"vertebral_fracture", "osteoporotic_fracture"}), "vertebra", id="vertebra"),
        pytest.param(frozenset({"forearm_fracture"}), "forearm", id="forearm"),
        pytest.param(frozenset({"humerus_fracture"}), "humerus", id="humerus"),
        pytest.param(frozenset({"osteoporotic_fracture"}), None, id="no-site-concept"),
    ],
)
def test_site_of_fracture_concepts(concepts: frozenset[str], site: str | None) -> None:
    assert site_of_fracture_concepts(concepts) == site


@pytest.mark.protocol("3b-fractures")
@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        pytest.param(ICD10CM, "S72.001A", True, id="initial-encounter-closed"),
        pytest.param(ICD10CM, "S52.501B", True, id="initial-encounter-open"),
        pytest.param(ICD10CM, "S32.010D", False, id="subsequent-encounter"),
        pytest.param(ICD10CM, "S72.001G", False, id="subsequent-delayed-healing"),
        pytest.param(ICD10CM, "S72.001S", False, id="sequela"),
        pytest.param(ICD10CM, "M80.08XA", True, id="osteoporotic-initial"),
        pytest.param(ICD10CM, "S72001A", True, id="without-dot"),
        pytest.param(ICD10CM, "S72.0", None, id="no-seventh-character"),
        pytest.param(ICD10CM, "S72.001Z", None, id="unknown-seventh-character"),
        pytest.param(ICD10, "S72.001A", None, id="who-icd-has-no-seventh-character"),
    ],
)
def test_icd_cm_initial_encounter(system: str, code: str, expected: bool | None) -> None:
    assert icd_cm_initial_encounter(system, code) is expected


@pytest.mark.protocol("3b-fractures", "3b-cv-undated")
@pytest.mark.parametrize(
    ("system", "code", "concepts", "display", "expected"),
    [
        pytest.param(ICD10CM, "Z87.310", frozenset(), "", True, id="history-of-osteoporosis-fracture"),
        pytest.param(ICD10, "Z86.73", frozenset(), "", True, id="history-of-stroke"),
        pytest.param(ICD10CM, "Z85.3", frozenset(), "", True, id="history-of-cancer"),
        pytest.param(ICD10CM, "Z92.3", frozenset(), "", True, id="history-of-irradiation"),
        pytest.param(SNOMED, "1234", frozenset({"history_of_cv_event"}), "", True, id="history-concept"),
        pytest.param(SNOMED, "1234", frozenset(), "History of myocardial infarction", True, id="display"),
        pytest.param(ICD10CM, "I21.9", frozenset(), "Acute myocardial infarction", False, id="current-mi"),
        pytest.param(ICD10CM, "S72.001A", frozenset(), "Fracture of femoral neck", False, id="fracture"),
    ],
)
def test_history_codes(
    system: str, code: str, concepts: frozenset[str], display: str, expected: bool
) -> None:
    assert is_history_code(system, code, concepts, display) is expected


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        pytest.param(ICD10CM, "M80.08XA", True, id="cm-osteoporotic"),
        pytest.param(ICD10, "M80.05", True, id="who-osteoporotic"),
        pytest.param(ICD10, "M81.0", False, id="osteoporosis-without-fracture"),
        pytest.param(SNOMED, "M80", False, id="not-icd"),
    ],
)
def test_osteoporotic_icd(system: str, code: str, expected: bool) -> None:
    assert is_osteoporotic_icd(system, code) is expected


@pytest.mark.protocol("3c-brands")
@pytest.mark.parametrize(
    ("text", "agent"),
    [
        pytest.param("Alendronate sodium 70 mg tablet", "alendronate", id="ingredient"),
        pytest.param("FOSAMAX 70MG TAB", "alendronate", id="brand-upper-case"),
        pytest.param("zoledronic   acid 5 mg/100 mL", "zoledronic_acid", id="multi-word-extra-spaces"),
        pytest.param("Zometa 4 mg", "zoledronic_acid", id="oncology-brand"),
        pytest.param("denosumab-bbdz (Jubbonti) 60 mg/mL", "denosumab", id="biosimilar-suffix"),
        pytest.param("Xgeva 120 mg/1.7 mL", "denosumab", id="oncology-denosumab-brand"),
        pytest.param("Evenity 105 mg/1.17 mL syringe", "romosozumab", id="romosozumab-brand"),
        pytest.param("Forsteo 20 micrograms", "teriparatide", id="eu-teriparatide-brand"),
        pytest.param("Calcium carbonate 500 mg", None, id="not-a-bone-agent"),
        pytest.param("prednisolone", None, id="no-whole-word-match"),
        pytest.param("", None, id="empty"),
    ],
)
def test_ingredient_in_text(text: str, agent: str | None, knowledge: Knowledge) -> None:
    assert ingredient_in_text(text, knowledge) == agent


def test_ingredients_in_text_finds_every_agent(knowledge: Knowledge) -> None:
    text = "switched from Prolia to alendronic acid, then teriparatide"
    assert ingredients_in_text(text, knowledge) == {"denosumab", "alendronate", "teriparatide"}
    assert ingredients_in_text("", knowledge) == set()


def test_medication_roles_prefer_the_non_oncology_role(knowledge: Knowledge) -> None:
    roles = medication_roles(knowledge)
    # zoledronic acid has an oncology product (Zometa 4 mg) beside its osteoporosis products.
    assert roles["zoledronic_acid"] == "first_line_antiresorptive"
    assert roles["denosumab"] == "first_line_antiresorptive"
    assert roles["romosozumab"] == "anabolic"
