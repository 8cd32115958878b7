"""Office E/M level from the 2021+ MDM table or total time, on hand-written notes."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from nlp.rules.em_level import suggest_em_level


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return json.loads(resources.files("nlp").joinpath("resources", "services", "em.json").read_text(encoding="utf-8"))


def test_total_time_decides_when_higher_than_mdm(rules: dict[str, Any]) -> None:
    text = (
        "Established patient returns for follow-up of a cough.\n"
        "Assessment:\n1. Viral upper respiratory infection - supportive care, honey, fluids.\n"
        "Total time spent on the date of the encounter: 35 minutes."
    )
    em = suggest_em_level(text, rules)
    assert em is not None
    assert em.code == "99214"  # 30-39 minutes, established
    assert em.time_minutes == 35
    assert "time" in em.message
    assert any("total time" in label for _, _, label in em.elements)


def test_new_patient_time_thresholds(rules: dict[str, Any]) -> None:
    text = (
        "New patient establishing care.\nAssessment:\n1. Low back pain, acute, mechanical - ice and stretching.\n"
        "I spent 62 minutes in total on this visit."
    )
    em = suggest_em_level(text, rules)
    assert em is not None and em.is_new
    assert em.code == "99205"


def test_two_stable_chronic_illnesses_with_prescription_management(rules: dict[str, Any]) -> None:
    text = (
        "Follow-up visit.\nAssessment/Plan:\n"
        "1. Hypertension - stable; continue lisinopril 10 mg daily.\n"
        "2. Type 2 diabetes - controlled; continue metformin 500 mg twice daily.\n"
    )
    em = suggest_em_level(text, rules)
    assert em is not None
    assert em.code == "99214"
    assert (em.problems, em.risk) == (3, 3)
    assert "problems" in em.message and "risk" in em.message


def test_acute_uncomplicated_illness_with_otc_treatment_is_low(rules: dict[str, Any]) -> None:
    text = "Returns with sore throat.\nAssessment:\n1. Acute viral pharyngitis - ibuprofen and salt-water gargles.\n"
    em = suggest_em_level(text, rules)
    assert em is not None
    assert em.code == "99213"


def test_exacerbation_denied_is_not_counted(rules: dict[str, Any]) -> None:
    text = "Follow-up.\nAssessment:\n1. Asthma, mild intermittent, without exacerbation.\n"
    em = suggest_em_level(text, rules)
    assert em is not None
    assert em.problems == 2  # one stable chronic illness, not "chronic illness with exacerbation"


def test_hospital_admission_is_high_risk(rules: dict[str, Any]) -> None:
    text = (
        "Established patient.\nAssessment and Plan:\n"
        "1. COPD with severe exacerbation, hypoxic on room air - direct admission to the hospital arranged.\n"
        "2. Chest x-ray and CBC, BMP ordered; outside records from pulmonology reviewed.\n"
    )
    em = suggest_em_level(text, rules)
    assert em is not None
    assert em.code == "99215"


def test_return_precautions_are_not_a_hospitalization_decision(rules: dict[str, Any]) -> None:
    text = (
        "Returns for follow-up.\nAssessment:\n1. Acute bronchitis - supportive care.\n"
        "Go to the ED if short of breath; hospitalization may be needed if worse."
    )
    em = suggest_em_level(text, rules)
    assert em is not None
    assert em.risk < 4


def test_preventive_and_procedure_visits_get_no_office_em(rules: dict[str, Any]) -> None:
    assert suggest_em_level("WELL-CHILD VISIT (4 years)\nAssessment:\n1. Well child.", rules) is None
    assert suggest_em_level("COLONOSCOPY PROCEDURE NOTE\nFindings: normal.\nImpression: normal colon.", rules) is None


def test_new_versus_established_default(rules: dict[str, Any]) -> None:
    text = "Assessment:\n1. Hypertension - stable, continue amlodipine 5 mg.\n"
    em = suggest_em_level(text, rules)
    assert em is not None and not em.is_new
    assert em.code.startswith("9921")
