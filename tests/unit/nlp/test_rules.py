"""Coding rules of the ICD-10-CM Official Guidelines, on hand-written notes through the real pipeline,
plus the pure rule functions."""

from __future__ import annotations

import pytest

from codebooks.repository import CodebookRepository
from nlp.pipeline import Pipeline
from nlp.resources import load_resources
from nlp.rules import guidelines as g
from nlp.rules.codetree import CodeTree
from tests.unit.nlp.conftest import code_note, codes

RULES = load_resources().rules


@pytest.mark.slow
class TestGuidelinesThroughPipeline:
    def test_suggestions_are_always_billable(self, coding_pipeline: Pipeline,
                                             codebook_repository: CodebookRepository) -> None:
        all_codes = codebook_repository.codes("icd10cm")
        result = code_note(coding_pipeline, "Assessment:\n1. Heart failure.\n2. Colles fracture of left radius.\n"
                                            "3. Diabetes.\n4. Chronic kidney disease.", setting="emergency")
        assert result.suggestions
        assert all(all_codes[s.code].is_billable for s in result.suggestions)

    def test_falls_to_unspecified_only_without_detail(self, coding_pipeline: Pipeline) -> None:
        assert "N18.9" in codes(code_note(coding_pipeline, "Assessment: Chronic kidney disease."))
        got = codes(code_note(coding_pipeline, "Assessment: Chronic kidney disease. CKD stage 4 on labs."))
        assert "N18.4" in got and "N18.9" not in got

    def test_diabetes_with_ckd_is_a_combination_code(self, coding_pipeline: Pipeline) -> None:
        got = codes(code_note(coding_pipeline, "Assessment:\n1. Type 2 diabetes.\n2. CKD stage 3b."))
        assert {"E11.22", "N18.32"} <= got
        assert "E11.9" not in got

    def test_diabetes_with_neuropathy(self, coding_pipeline: Pipeline) -> None:
        got = codes(code_note(coding_pipeline, "Assessment:\nT2DM with peripheral neuropathy."))
        assert "E11.42" in got and "G62.9" not in got and "E11.9" not in got

    def test_hypertension_with_ckd(self, coding_pipeline: Pipeline) -> None:
        got = codes(code_note(coding_pipeline, "Assessment:\n1. HTN.\n2. CKD stage 4."))
        assert {"I12.9", "N18.4"} <= got and "I10" not in got

    def test_hypertension_with_esrd(self, coding_pipeline: Pipeline) -> None:
        got = codes(code_note(coding_pipeline, "Assessment:\n1. Hypertension.\n2. End stage renal disease."))
        assert {"I12.0", "N18.6"} <= got

    def test_hypertension_with_heart_failure(self, coding_pipeline: Pipeline) -> None:
        got = codes(code_note(coding_pipeline, "Assessment:\n1. Hypertension.\n2. Chronic HFrEF."))
        assert {"I11.0", "I50.22"} <= got and "I10" not in got

    def test_hypertension_heart_failure_and_ckd(self, coding_pipeline: Pipeline) -> None:
        got = codes(code_note(coding_pipeline, "Assessment:\n1. HTN.\n2. CHF.\n3. CKD 3a."))
        assert {"I13.0", "I50.9", "N18.31"} <= got and "I11.0" not in got and "I12.9" not in got

    def test_uncertain_diagnosis_outpatient_codes_the_symptom(self, coding_pipeline: Pipeline) -> None:
        note = "Chief complaint: cough.\nAssessment: Cough, probable pneumonia."
        got = codes(code_note(coding_pipeline, note, setting="outpatient"))
        assert "J18.9" not in got and "R05.9" in got

    def test_uncertain_diagnosis_inpatient_is_coded(self, coding_pipeline: Pipeline) -> None:
        note = "Discharge Diagnoses:\n1. Probable community-acquired pneumonia."
        result = code_note(coding_pipeline, note, setting="inpatient")
        assert "J18.9" in codes(result)
        flags = {f.kind for s in result.suggestions if s.code == "J18.9" for f in s.flags}
        assert "uncertain_inpatient" in flags

    def test_medication_list_gives_long_term_use(self, coding_pipeline: Pipeline) -> None:
        note = ("Assessment: Type 2 diabetes. Atrial fibrillation.\n"
                "Medications:\ninsulin glargine 20 units nightly\nmetformin 1000 mg BID\napixaban 5 mg BID\n")
        got = codes(code_note(coding_pipeline, note))
        assert {"Z79.4", "Z79.84", "Z79.01"} <= got

    def test_short_course_is_not_long_term_use(self, coding_pipeline: Pipeline) -> None:
        note = "Assessment: Gout flare.\nPlan: prednisone 40 mg daily x 5 days."
        assert "Z79.52" not in codes(code_note(coding_pipeline, note), min_score=0.0)

    def test_tobacco_current_and_former(self, coding_pipeline: Pipeline) -> None:
        assert "F17.210" in codes(code_note(coding_pipeline, "Social History: Current smoker, 1 ppd."))
        former = codes(code_note(coding_pipeline, "Social History: Former smoker, quit 2010."))
        assert "Z87.891" in former and "F17.210" not in former

    def test_injury_seventh_character_and_laterality(self, coding_pipeline: Pipeline) -> None:
        initial = codes(code_note(coding_pipeline, "Impression: Colles fracture of the left radius.",
                                  setting="emergency"))
        assert "S52.532A" in initial
        later = codes(code_note(coding_pipeline, "Assessment: Colles fracture of left radius, follow-up visit, "
                                                 "routine healing."))
        assert "S52.532D" in later

    def test_bmi_reported_only_with_weight_diagnosis(self, coding_pipeline: Pipeline) -> None:
        assert "Z68.41" in codes(code_note(coding_pipeline, "Assessment: Morbid obesity, BMI 42.5."))
        assert "Z68.41" not in codes(code_note(coding_pipeline, "Vitals: BMI 42.5."), min_score=0.0)

    def test_excludes1_pairs_never_suggested_together(self, coding_pipeline: Pipeline,
                                                      codebook_repository: CodebookRepository) -> None:
        excludes1 = codebook_repository.instructions("icd10cm", "excludes1")
        tree = CodeTree(codebook_repository.codes("icd10cm"))
        note = "Assessment:\n1. Type 1 diabetes.\n2. Type 2 diabetes mellitus.\n3. Essential hypertension."
        got = sorted(codes(code_note(coding_pipeline, note), min_score=0.0))
        assert got
        for a in got:
            for b in got:
                assert a == b or not g.excludes1_conflict(a, b, excludes1, tree), (a, b)

    def test_evidence_of_a_combination_code_covers_both_parts(self, coding_pipeline: Pipeline) -> None:
        text = "Assessment:\n1. Type 2 diabetes.\n2. CKD stage 3b."
        s = next(s for s in code_note(coding_pipeline, text).suggestions if s.code == "E11.22")
        texts = {e.text for e in s.evidence}
        assert "Type 2 diabetes" in texts and "CKD stage 3b" in texts


def test_bmi_codes() -> None:
    assert g.bmi_code(42.3, 50, percentile=False) == "Z68.41"
    assert g.bmi_code(27.9, 50, percentile=False) == "Z68.27"
    assert g.bmi_code(19.0, 50, percentile=False) == "Z68.1"
    assert g.bmi_code(96, 12, percentile=True) == "Z68.54"
    assert g.bmi_code(30, 12, percentile=False) is None


def test_gestation_codes() -> None:
    assert g.gestation_code(39) == "Z3A.39"
    assert g.gestation_code(5) == "Z3A.01"


def test_hypertension_combination_table() -> None:
    assert g.hypertension_combination(True, False, False, RULES) == "I12.9"
    assert g.hypertension_combination(True, True, False, RULES) == "I12.0"
    assert g.hypertension_combination(False, False, True, RULES) == "I11.0"
    assert g.hypertension_combination(True, True, True, RULES) == "I13.2"
    assert g.hypertension_combination(False, False, False, RULES) is None


def test_history_code_lookup_longest_prefix() -> None:
    table = load_resources().history_codes
    assert g.history_code("C50.912", table, family=False) == "Z85.3"
    assert g.history_code("C56.9", table, family=True) == "Z80.41"
    assert g.history_code("I82.409", table, family=False) == "Z86.718"
    assert g.history_code("J45.909", table, family=False) is None


def test_laterality_and_encounter_cues() -> None:
    assert g.laterality("fracture of the left wrist", RULES) == "left"
    assert g.laterality("both knees", RULES) == "bilateral"
    assert g.laterality("right hand and left foot", RULES) is None
    assert g.encounter_kind("cast check, routine healing", RULES) == "subsequent"
    assert g.encounter_kind("fell today", RULES) == "initial"


def test_resource_codes_exist_in_the_code_set(codebook_repository: CodebookRepository) -> None:
    res = load_resources()
    all_codes = codebook_repository.codes("icd10cm")
    listed = [r["code"] for r in res.synonyms] + [r["code"] for r in res.medications]
    listed += [c for r in res.history_codes for c in (r["personal_history"], r["family_history"]) if c]
    listed += [p["code"] for p in res.patterns if p.get("code")]
    missing = sorted({c for c in listed if c not in all_codes})
    assert missing == []


@pytest.mark.slow
class TestInjuryAndExternalCauses:
    NOTE = ("ED NOTE\nHPI: Tripped and fell on the sidewalk while walking to the store; scalp laceration.\n"
            "Labs: Blood alcohol 250 mg/dL.\nImpression:\n1. Laceration of scalp without foreign body.\n"
            "2. Alcohol dependence with intoxication, uncomplicated.\n")

    def test_injury_brings_mechanism_place_activity_status(self, coding_pipeline: Pipeline) -> None:
        got = codes(code_note(coding_pipeline, self.NOTE, setting="emergency"))
        assert {"S01.01XA", "W01.0XXA", "Y92.480", "Y93.01", "Y99.8"} <= got

    def test_blood_alcohol_level_with_an_alcohol_diagnosis(self, coding_pipeline: Pipeline) -> None:
        got = codes(code_note(coding_pipeline, self.NOTE, setting="emergency"))
        assert {"F10.220", "Y90.8"} <= got

    def test_external_causes_never_without_an_injury(self, coding_pipeline: Pipeline) -> None:
        note = ("HPI: Walks on the sidewalk daily. Fell from a ladder 10 years ago, no injury.\n"
                "Assessment: Hypertension.")
        got = codes(code_note(coding_pipeline, note), min_score=0.0)
        assert not any(c[0] in "VWXY" for c in got)

    def test_work_related_status(self, coding_pipeline: Pipeline) -> None:
        note = "HPI: Fell from a ladder at work.\nImpression: Colles fracture of right radius."
        got = codes(code_note(coding_pipeline, note, setting="emergency"))
        assert {"S52.531A", "W11.XXXA", "Y99.0"} <= got and "Y99.8" not in got


def test_blood_alcohol_codes() -> None:
    assert g.blood_alcohol_code(10) == "Y90.0"
    assert g.blood_alcohol_code(150) == "Y90.6"
    assert g.blood_alcohol_code(268) == "Y90.8"
