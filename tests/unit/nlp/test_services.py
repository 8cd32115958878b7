"""CPT service detection on hand-written sentences (never dev-set notes).

The detector is built from the curated CPT list the project ships, exactly as the pipeline builds
it from `CandidateSource.codes("cpt")`.
"""

from __future__ import annotations

import datetime as dt

import pytest

from codebooks.loaders.cpt import curated_path, parse_cpt_file
from nlp.components.services import ServiceDetector, rules_version
from nlp.types import CodeInfo, Excluded, Section, Suggestion

EM_CODES = {f"992{n:02d}" for n in range(2, 16)}


@pytest.fixture(scope="module")
def cpt_codes() -> dict[str, CodeInfo]:
    return {r["code"]: CodeInfo("cpt", r["code"], r["long"], True) for r in parse_cpt_file(curated_path())}


@pytest.fixture(scope="module")
def detector(cpt_codes: dict[str, CodeInfo]) -> ServiceDetector:
    return ServiceDetector(cpt_codes, suggest_em=False)


def run(
    detector: ServiceDetector,
    text: str,
    setting: str = "outpatient",
    *,
    age: int | None = None,
    date: dt.date | None = None,
) -> tuple[dict[str, Suggestion], list[Excluded]]:
    suggestions, excluded = detector.detect(text, [], setting, date, age=age)
    for s in suggestions:
        assert s.system == "cpt"
        assert 0.0 <= s.score <= 1.0
        assert s.evidence, s.code
        for e in s.evidence:
            assert text[e.start : e.end] == e.text
            assert e.assertion == "present"
    for x in excluded:
        assert text[x.start : x.end] == x.text
    return {s.code: s for s in suggestions}, excluded


def quantity(s: Suggestion) -> str:
    return " | ".join(f.message for f in s.flags if f.kind == "quantity")


# ---- laceration repair: lengths summed per anatomic group and repair type ------------------------


def test_simple_repairs_in_one_group_are_summed(detector: ServiceDetector) -> None:
    text = (
        "Procedure: Simple repair of a 2.5 cm laceration of the left forearm and a 1.0 cm laceration "
        "of the left hand with 5-0 nylon sutures."
    )
    found, _ = run(detector, text)
    assert set(found) == {"12002"}  # 3.5 cm: 2.6-7.5 cm bracket, not two 12001s
    assert "2.5 cm + 1.0 cm = 3.5 cm" in quantity(found["12002"])
    assert "simple" in quantity(found["12002"])


def test_face_and_extremity_repairs_are_separate_groups(detector: ServiceDetector) -> None:
    text = "Simple repair of a 2.0 cm chin laceration and a 3.0 cm laceration of the right knee, sutured."
    found, _ = run(detector, text)
    assert {"12011", "12002"} <= set(found)
    assert "12001" not in found and "12013" not in found


def test_layered_closure_is_intermediate(detector: ServiceDetector) -> None:
    text = "The 4 cm laceration of the right thigh was repaired with a layered closure using deep absorbable sutures."
    found, _ = run(detector, text)
    assert set(found) == {"12032"}


def test_millimetres_are_converted(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Laceration of the upper lip, 15 mm, repaired with simple interrupted sutures.")
    assert set(found) == {"12011"}
    assert "1.5 cm" in quantity(found["12011"])


def test_face_breakpoint_at_five_centimetres(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Simple repair of a 5.5 cm forehead laceration; closed with 6-0 sutures.")
    assert set(found) == {"12014"}


def test_complex_repair_adds_each_additional_five_cm(detector: ServiceDetector) -> None:
    text = (
        "Complex repair of an 8.5 cm laceration of the back: debridement of wound edges and extensive "
        "undermining, closed in layers."
    )
    found, _ = run(detector, text)
    assert {"13101", "13102"} <= set(found)
    assert found["13102"].units == 1


def test_total_length_is_not_double_counted(detector: ServiceDetector) -> None:
    text = "Two scalp lacerations (3 cm and 3 cm) repaired with staples, total length 6 cm."
    found, _ = run(detector, text)
    assert set(found) == {"12002"}
    assert "6.0 cm" in quantity(found["12002"])


def test_wound_restated_in_impression_is_one_wound(detector: ServiceDetector) -> None:
    text = (
        "Procedure: simple repair of a 2 cm laceration of the left shin with 4 sutures.\n\n"
        "Impression: laceration of left shin, 2 cm, repaired."
    )
    found, _ = run(detector, text)
    assert set(found) == {"12001"}


def test_obstetric_laceration_is_not_a_skin_repair(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Second-degree perineal laceration repaired with 3-0 suture after delivery.")
    assert not found


# ---- lesion counts ----------------------------------------------------------------------------


def test_three_actinic_keratoses_in_words(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Cryotherapy with liquid nitrogen to three actinic keratoses on the scalp.")
    assert set(found) == {"17000", "17003"}
    assert found["17000"].units == 1
    assert found["17003"].units == 2


def test_aks_times_twelve(detector: ServiceDetector) -> None:
    found, _ = run(detector, "AKs x 12 on the face and scalp treated with LN2, two freeze-thaw cycles.")
    assert found["17003"].units == 11
    assert "12" in quantity(found["17000"])


def test_fifteen_or_more_premalignant_lesions_is_17004_alone(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Liquid nitrogen cryodestruction of 16 actinic keratoses of the forearms.")
    assert set(found) == {"17004"}


def test_lesion_counts_at_two_sites_are_summed(detector: ServiceDetector) -> None:
    text = "Procedures:\n1. Cryotherapy of 2 AKs, left temple.\n2. Cryotherapy of 3 AKs, right forearm."
    found, _ = run(detector, text)
    assert found["17003"].units == 4


def test_warts_are_benign_destruction(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Common warts x 3 on the right hand were treated with cryotherapy.")
    assert set(found) == {"17110"}


def test_plural_without_count_is_flagged(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Actinic keratoses on both cheeks were frozen with liquid nitrogen.")
    assert "17000" in found
    assert any(f.kind == "needs_review" for f in found["17000"].flags)


def test_punch_biopsies_count_lesions(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Punch biopsies of two lesions on the back were performed.")
    assert set(found) == {"11104", "11105"}
    assert found["11105"].units == 1


def test_mixed_biopsy_techniques_use_one_primary_code(detector: ServiceDetector) -> None:
    text = (
        "Procedures:\n1. Shave biopsy of a pearly papule, left cheek, performed.\n"
        "2. Punch biopsy of a pigmented macule, right thigh, performed."
    )
    found, _ = run(detector, text)
    assert set(found) == {"11104", "11103"}  # punch outranks tangential; the shave is an add-on


def test_same_biopsy_described_twice_is_one_lesion(detector: ServiceDetector) -> None:
    text = (
        "Procedure: tangential biopsy of the right shoulder lesion. After consent, a shave biopsy was "
        "performed with a flexible blade; hemostasis with aluminum chloride."
    )
    found, _ = run(detector, text)
    assert set(found) == {"11102"}


# ---- immunizations: product codes, components and administration ---------------------------


def test_pediatric_components_with_physician_counseling(detector: ServiceDetector) -> None:
    text = (
        "Vaccines given today after I counseled the parent on the risks and benefits of each component:\n"
        "- DTaP-IPV (Kinrix) 0.5 mL IM, left thigh\n- MMR 0.5 mL subcutaneous, right arm"
    )
    found, _ = run(detector, text, age=4)
    assert {"90696", "90707", "90460", "90461"} <= set(found)
    assert found["90460"].units == 2  # one first component per vaccine
    assert found["90461"].units == 5  # (4 - 1) + (3 - 1) additional components
    assert "90471" not in found


def test_single_component_vaccines_have_no_90461(detector: ServiceDetector) -> None:
    text = "Immunizations today, counseled by physician: HPV9 (Gardasil 9) 0.5 mL IM; MenACWY (Menactra) 0.5 mL IM."
    found, _ = run(detector, text, age=12)
    assert found["90460"].units == 2
    assert "90461" not in found


def test_adult_injections_use_90471_and_90472(detector: ServiceDetector) -> None:
    text = "Shingrix 0.5 mL IM and Prevnar 20 0.5 mL IM administered in the left deltoid."
    found, _ = run(detector, text, age=67)
    assert {"90750", "90677", "90471", "90472"} <= set(found)
    assert found["90472"].units == 1
    assert "90460" not in found


def test_pediatric_without_physician_counseling_uses_90471(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Hepatitis A vaccine #2 given IM by the nurse.", age=2)
    assert {"90633", "90471"} <= set(found)
    assert any(f.kind == "needs_review" for f in found["90471"].flags)


def test_adult_hepatitis_b_uses_adult_product(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Engerix-B dose 2 given 1 mL IM today.", age=45)
    assert "90746" in found and "90744" not in found


def test_influenza_product_follows_the_date_of_service(detector: ServiceDetector) -> None:
    text = "Influenza vaccine (Fluarix) 0.5 mL IM given today."
    before, _ = run(detector, text, age=50, date=dt.date(2023, 10, 2))
    after, _ = run(detector, text, age=50, date=dt.date(2025, 10, 2))
    assert "90686" in before and "90656" not in before
    assert "90656" in after


def test_intranasal_only_is_90473(detector: ServiceDetector) -> None:
    found, _ = run(detector, "FluMist intranasal vaccine administered today.", age=30, date=dt.date(2023, 11, 1))
    assert {"90672", "90473"} <= set(found)
    assert "90471" not in found


def test_immunization_history_is_not_given_today(detector: ServiceDetector) -> None:
    found, excluded = run(detector, "Immunization history: Tdap in 2019, Shingrix series completed in 2023.", age=60)
    assert not found
    assert {x.reason for x in excluded} == {"historical"}


# ---- tense and assertion: planned, ordered, declined, deferred -------------------------------


@pytest.mark.parametrize(
    ("text", "blocked", "reason"),
    [
        ("Will schedule colonoscopy with Dr. Smith.", {"45378"}, "hypothetical"),
        ("Patient declined the flu shot this season.", {"90656", "90471"}, "negated"),
        ("ECG ordered for next visit.", {"93000"}, "hypothetical"),
        ("Shave biopsy of the lesion deferred until after her trip.", {"11102"}, "negated"),
        ("Recommend Tdap booster at the next visit.", {"90715", "90471"}, "hypothetical"),
        ("Plan: colonoscopy in 3 years.", {"45378"}, "hypothetical"),
        ("If pain persists, will consider a corticosteroid injection of the right knee.", {"20610"}, "hypothetical"),
        ("Rapid strep test not performed given low Centor score.", {"87880"}, "negated"),
        ("Cryotherapy of the actinic keratoses was cancelled.", {"17000"}, "negated"),
        ("Refused venipuncture today.", {"36415"}, "negated"),
        ("Mother declined the MMR vaccine today.", {"90707", "90460", "90471"}, "negated"),
        ("Discussed EGD; she wants to think about it.", {"43235"}, "hypothetical"),
        ("Knee injection scheduled for next week.", {"20610"}, "hypothetical"),
        ("Arthrocentesis of the left knee was not performed.", {"20610"}, "negated"),
        ("Distal radius buckle fracture: she will be placed in a short arm splint by orthopedics.", {"29125"}, ""),
        ("Incentive spirometry encouraged.", {"94010"}, ""),
        ("At that time she had the hip injection, which helped briefly.", {"20610"}, "historical"),
    ],
)
def test_services_not_performed_are_excluded(
    detector: ServiceDetector, text: str, blocked: set[str], reason: str
) -> None:
    found, excluded = run(detector, text, age=40)
    assert not (blocked & set(found)), found.keys()
    if reason:
        assert reason in {x.reason for x in excluded}


def test_given_and_declined_in_one_sentence(detector: ServiceDetector) -> None:
    found, excluded = run(detector, "Tdap 0.5 mL IM given today; patient declined the influenza vaccine.", age=35)
    assert {"90715", "90471"} <= set(found)
    assert "90656" not in found and "90472" not in found
    assert any(x.reason == "negated" and "influenza" in x.text.lower() for x in excluded)


def test_performed_cues(detector: ServiceDetector) -> None:
    text = "EKG was done today: sinus rhythm, rate 72. Blood drawn by venipuncture for labs."
    found, _ = run(detector, text)
    assert {"93000", "36415"} <= set(found)


# ---- setting: professional claim in the ED and hospital ----------------------------------------

ED_TEXT = (
    "ED course: Albuterol nebulizer treatments given x2 by respiratory therapy. Tdap 0.5 mL IM given.\n"
    "Procedure: simple repair of a 2 cm laceration of the left forearm with 4-0 nylon."
)


def test_emergency_department_counts_only_physician_procedures(detector: ServiceDetector) -> None:
    found, _ = run(detector, ED_TEXT, "emergency", age=30)
    assert set(found) == {"12001"}


def test_office_counts_staff_services(detector: ServiceDetector) -> None:
    found, _ = run(detector, ED_TEXT, "outpatient", age=30)
    assert {"12001", "94640", "90715", "90471"} <= set(found)
    assert found["94640"].units == 2


def test_ecg_in_the_emergency_department_is_interpretation_only(detector: ServiceDetector) -> None:
    found, _ = run(detector, "ECG interpreted by me: sinus tachycardia, no acute ST changes.", "emergency")
    assert set(found) == {"93010"}
    found, _ = run(detector, "ECG: sinus tachycardia, no acute ST changes.", "emergency")
    assert not found


def test_hospital_discharge_summary_has_no_procedures_of_others(detector: ServiceDetector) -> None:
    text = "Hospital course: laparoscopic cholecystectomy performed by surgery. Colonoscopy performed by GI."
    found, _ = run(detector, text, "inpatient")
    assert not found


def test_office_ecg_tracing_sent_for_interpretation(detector: ServiceDetector) -> None:
    found, _ = run(detector, "12-lead ECG performed in the office; tracing sent to cardiology for interpretation.")
    assert set(found) == {"93005"}


# ---- procedures and tests ------------------------------------------------------------------------


def test_colonoscopy_snare_and_biopsy(detector: ServiceDetector) -> None:
    text = (
        "COLONOSCOPY PROCEDURE NOTE\nThe scope was advanced to the cecum.\n"
        "Findings: 6 mm sigmoid polyp removed with cold snare. Random biopsies taken from the ascending colon.\n"
        "Recommendations: repeat colonoscopy in 5 years."
    )
    found, excluded = run(detector, text)
    assert set(found) == {"45385", "45380"}  # diagnostic 45378 is included in them
    assert any(x.reason == "hypothetical" for x in excluded)


def test_diagnostic_colonoscopy_without_biopsy(detector: ServiceDetector) -> None:
    text = "PROCEDURE NOTE\nColonoscopy to the terminal ileum. Normal mucosa throughout. No polyps; no biopsies taken."
    found, _ = run(detector, text)
    assert set(found) == {"45378"}


def test_egd_and_colonoscopy_split_biopsies_by_region(detector: ServiceDetector) -> None:
    text = (
        "ENDOSCOPY REPORT\nEGD: biopsies of the gastric antrum obtained for H. pylori.\n"
        "Colonoscopy: normal colon to the cecum, no lesions."
    )
    found, _ = run(detector, text)
    assert set(found) == {"43239", "45378"}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Right knee injected with 40 mg triamcinolone and 3 mL lidocaine after sterile prep.", "20610"),
        ("Left wrist arthrocentesis performed; 3 mL of straw-colored fluid aspirated.", "20605"),
        ("Procedure: corticosteroid injection of the right first MTP joint.", "20600"),
        ("Trigger finger injection of the right ring finger A1 pulley with Kenalog 10 mg performed.", "20550"),
        ("Carpal tunnel injection, left, with 1 mL methylprednisolone performed today.", "20526"),
        ("Trigger point injections in 4 muscles of the upper back were performed.", "20553"),
        ("Ultrasound-guided injection of the left shoulder subacromial bursa with triamcinolone performed.", "20611"),
    ],
)
def test_injection_by_site(detector: ServiceDetector, text: str, code: str) -> None:
    found, _ = run(detector, text)
    assert set(found) == {code}


def test_bilateral_knee_injections_are_two_units(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Bilateral knee injections with triamcinolone 40 mg each were performed.")
    assert found["20610"].units == 2


def test_closed_fracture_care(detector: ServiceDetector) -> None:
    found, _ = run(
        detector,
        "Closed reduction of the right distal radius fracture under hematoma block; splint applied.",
        "emergency",
    )
    assert set(found) == {"25605"}
    found, _ = run(
        detector, "Nondisplaced fifth metatarsal fracture: closed treatment, short leg cast applied in clinic."
    )
    assert set(found) == {"28470"}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Urine dipstick in the office: trace protein, no microscopy.", "81002"),
        ("Automated urinalysis (Clinitek analyzer) performed without microscopy: negative.", "81003"),
        ("Office urine dipstick with microscopy: 5-10 WBC/hpf.", "81000"),
        ("Point-of-care hemoglobin A1c today 7.2%.", "83036"),
        ("Rapid strep antigen test positive.", "87880"),
        ("Fingerstick glucose 182 in clinic.", "82962"),
        ("Urine pregnancy test negative.", "81025"),
        ("Spirometry performed today: FEV1/FVC 0.62.", "94010"),
        (
            "X-ray of the right ankle, 3 views, obtained in the office today and interpreted by me: no fracture.",
            "73610",
        ),
    ],
)
def test_office_tests(detector: ServiceDetector, text: str, code: str) -> None:
    found, _ = run(detector, text)
    assert set(found) == {code}


def test_rapid_influenza_a_and_b_is_two_units(detector: ServiceDetector) -> None:
    found, _ = run(detector, "Rapid influenza A/B antigen test negative.")
    assert found["87804"].units == 2


def test_results_from_elsewhere_are_not_office_tests(detector: ServiceDetector) -> None:
    text = (
        "A1c 7.8% in March. Chest x-ray from the urgent care reviewed. "
        "Venipuncture for CMP and lipid panel; specimens sent to the reference lab."
    )
    found, _ = run(detector, text)
    assert set(found) == {"36415"}


# ---- output contract ----------------------------------------------------------------------------


def test_descriptions_come_from_the_code_set(cpt_codes: dict[str, CodeInfo]) -> None:
    licensed = dict(cpt_codes)
    licensed["93000"] = CodeInfo("cpt", "93000", "LICENSED WORDING FOR 93000", True)
    found, _ = run(ServiceDetector(licensed, suggest_em=False), "ECG done today: normal sinus rhythm.")
    assert found["93000"].description == "LICENSED WORDING FOR 93000"


def test_codes_missing_from_the_code_set_are_not_suggested(cpt_codes: dict[str, CodeInfo]) -> None:
    reduced = {k: v for k, v in cpt_codes.items() if k != "36415"}
    det = ServiceDetector(reduced, suggest_em=False)
    assert "36415" in det.missing_codes
    found, _ = run(det, "Venipuncture performed today.")
    assert "36415" not in found


def test_evidence_carries_the_section_title(detector: ServiceDetector) -> None:
    text = "Exam: normal.\nProcedures: Rapid strep test negative."
    sections = [Section("Exam", 0, 14), Section("Procedures", 14, len(text))]
    suggestions, _ = detector.detect(text, sections, "outpatient")
    assert suggestions[0].code == "87880"
    assert suggestions[0].evidence[0].section == "Procedures"
    assert [s.rank for s in suggestions] == list(range(1, len(suggestions) + 1))


def test_em_is_optional_and_sorts_last(cpt_codes: dict[str, CodeInfo]) -> None:
    text = (
        "Established patient returns for follow-up.\nRapid strep antigen test positive.\n"
        "Assessment/Plan:\n1. Streptococcal pharyngitis - start amoxicillin 500 mg twice daily.\n"
        "Total time 25 minutes."
    )
    with_em, _ = ServiceDetector(cpt_codes, suggest_em=True).detect(text, [], "outpatient")
    codes = [s.code for s in with_em]
    assert codes[0] == "87880"
    assert codes[-1] in EM_CODES
    assert with_em[-1].score < min(s.score for s in with_em[:-1])
    assert any(f.kind == "needs_review" for f in with_em[-1].flags)
    without, _ = ServiceDetector(cpt_codes, suggest_em=False).detect(text, [], "outpatient")
    assert not {s.code for s in without} & EM_CODES
    ed, _ = ServiceDetector(cpt_codes, suggest_em=True).detect(text, [], "emergency")
    assert not {s.code for s in ed} & EM_CODES


def test_rules_version_is_a_content_hash() -> None:
    version = rules_version()
    assert version.startswith("services-") and len(version) == len("services-") + 12


def test_detector_from_the_codebook_database(codebook_repository: object) -> None:
    """The pipeline's path: codes from the real SQLite code-set database."""
    codes = codebook_repository.codes("cpt")  # type: ignore[attr-defined]
    det = ServiceDetector(codes, suggest_em=False)
    found, _ = run(det, "Tdap 0.5 mL IM administered today.", age=30)
    assert {"90715", "90471"} <= set(found)
    assert found["90715"].description == codes["90715"].description
