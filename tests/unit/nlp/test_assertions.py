"""ConText assertions with the known misses fixed, on hand-written sentences through the real pipeline."""

from __future__ import annotations

import pytest

from nlp.pipeline import Pipeline
from tests.unit.nlp.conftest import assertion_of, code_note, codes

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("text", "phrase", "expected"),
    [
        ("Respiratory: No hemoptysis.", "hemoptysis", "negated"),
        ("Cardiac: No chest pain or palpitations.", "palpitations", "negated"),
        ("Respiratory: negative for wheezing.", "wheezing", "negated"),
        ("Chest x-ray is negative for pneumonia.", "pneumonia", "negated"),
        ("He denies fever, chills, or night sweats.", "night sweats", "negated"),
        ("No fever, chills, or dyspnea.", "dyspnea", "negated"),
        ("No hypoxemia.", "hypoxemia", "negated"),
        ("Chest x-ray ordered to evaluate for pneumonia.", "pneumonia", "uncertain"),
        ("Rule out pulmonary embolism.", "pulmonary embolism", "uncertain"),
        ("Likely viral pharyngitis.", "pharyngitis", "uncertain"),
        ("She is at risk for osteoporosis.", "osteoporosis", "hypothetical"),
        ("Return if chest pain recurs.", "chest pain", "hypothetical"),
        ("Mother has type 2 diabetes.", "type 2 diabetes", "family"),
        ("Family History:\nColon cancer in father.\n", "colon cancer", "family"),
        ("History of pneumonia in 2019.", "pneumonia", "historical"),
        ("Past Medical History:\nDeep vein thrombosis 2015.\n", "deep vein thrombosis", "historical"),
        ("Assessment:\nHypertension, well controlled.", "hypertension", "present"),
    ],
)
def test_assertion_patterns(coding_pipeline: Pipeline, text: str, phrase: str, expected: str) -> None:
    assert assertion_of(coding_pipeline, text, phrase) == expected


def test_description_without_does_not_negate_the_next_condition(coding_pipeline: Pipeline) -> None:
    text = "Assessment:\nMigraine without aura and essential hypertension."
    assert assertion_of(coding_pipeline, text, "essential hypertension") == "present"
    assert assertion_of(coding_pipeline, text, "migraine without aura") == "present"


def test_negated_mentions_are_excluded_with_reason_not_suggested(coding_pipeline: Pipeline) -> None:
    result = code_note(coding_pipeline, "HPI: cough for 3 days.\nROS: No fever. Denies hematuria.\n")
    assert "R50.9" not in {s.code for s in result.suggestions}
    assert "R31.9" not in {s.code for s in result.suggestions}
    reasons = {x.text.lower(): x.reason for x in result.excluded}
    assert reasons["fever"] == "negated"
    assert reasons["hematuria"] == "negated"


def test_family_history_gives_z80_never_the_disease(coding_pipeline: Pipeline) -> None:
    result = code_note(coding_pipeline, "Family History:\nMother with breast cancer at 50.\n")
    suggested = {s.code for s in result.suggestions}
    assert "Z80.3" in suggested
    assert not any(c.startswith("C50") for c in suggested)
    assert any(x.reason == "family" for x in result.excluded)


def test_resolved_history_becomes_personal_history(coding_pipeline: Pipeline) -> None:
    result = code_note(coding_pipeline, "Past Medical History:\nDeep vein thrombosis 2015, resolved.\n")
    suggested = {s.code for s in result.suggestions}
    assert "Z86.718" in suggested
    assert not any(c.startswith("I82") for c in suggested)


def test_history_of_a_chronic_condition_is_the_condition(coding_pipeline: Pipeline) -> None:
    assert "I10" in codes(code_note(coding_pipeline, "Past Medical History:\nHypertension.\n"))
