"""Normalisation, abbreviations and the Aho-Corasick dictionary on hand-built inputs."""

from __future__ import annotations

from nlp.components.dictionary import Dictionary, description_variants, index_variants
from nlp.components.sentences import split_sentences
from nlp.resources import load_resources
from nlp.text import Normalizer, load_abbreviations
from nlp.types import CodeInfo

RES = load_resources()
NORM = Normalizer(load_abbreviations(RES.abbreviations))


def test_abbreviations_expand_in_place_and_keep_offsets() -> None:
    text = "Pt with HTN and CKD 3b, s/p CABG."
    toks = NORM.tokens(text)
    words = [t for t, _, _ in toks]
    assert words[:5] == ["pt", "with", "hypertension", "and", "chronic"]
    htn = [t for t in toks if t[0] == "hypertension"][0]
    assert text[htn[1]:htn[2]] == "HTN"
    sp = [t for t in toks if t[0] == "status"][0]
    assert text[sp[1]:sp[2]] == "s/p"


def test_case_sensitive_abbreviations_need_capitals() -> None:
    assert "pulmonary" in NORM.phrase("Acute PE ruled in")
    assert "pulmonary" not in NORM.phrase("pe teacher")


def test_description_variants_drop_phrases_clinicians_do_not_write() -> None:
    v = description_variants("Type 2 diabetes mellitus without complications", RES.rules["description_strip"])
    assert "type 2 diabetes mellitus" in v
    v = description_variants("Essential (primary) hypertension", RES.rules["description_strip"])
    assert "essential hypertension" in v


def test_index_paths_become_phrases() -> None:
    assert {"acute bronchitis", "bronchitis acute"} <= index_variants("Bronchitis > acute")
    assert index_variants("Diabetes, diabetic (mellitus) > with > neuropathy") == set()


def _tiny_dictionary() -> Dictionary:
    codes = {
        "I10": CodeInfo("icd10cm", "I10", "Essential (primary) hypertension", True),
        "N18.4": CodeInfo("icd10cm", "N18.4", "Chronic kidney disease, stage 4 (severe)", True, "N18"),
        "N18": CodeInfo("icd10cm", "N18", "Chronic kidney disease (CKD)", False),
        "N18.9": CodeInfo("icd10cm", "N18.9", "Chronic kidney disease, unspecified", True, "N18"),
    }
    return Dictionary.build(NORM, codes, [], [], [], RES.rules)


def test_longest_match_wins_and_offsets_are_exact() -> None:
    d = _tiny_dictionary()
    text = "Known CKD, stage 4 and chronic kidney disease. Essential hypertension."
    hits = d.match(text)
    assert [(text[h.start:h.end], h.codes[0]) for h in hits] == [
        ("CKD, stage 4", "N18.4"), ("chronic kidney disease", "N18.9"), ("Essential hypertension", "I10")]


def test_billable_code_preferred_for_a_shared_phrase() -> None:
    hits = _tiny_dictionary().match("chronic kidney disease")
    assert hits[0].codes[0] == "N18.9"


def test_matches_only_at_word_boundaries() -> None:
    assert _tiny_dictionary().match("pseudohypertensionx") == []


def test_sentences_respect_lines_lists_and_abbreviations() -> None:
    text = "Assessment:\n1. Hypertension. Continue meds.\n2. Diabetes - stable; no hypoglycemia\nwith good control."
    sents = [text[a:b] for a, b in split_sentences(text)]
    assert "1. Hypertension." in sents
    assert "Continue meds." in sents
    assert "no hypoglycemia\nwith good control." in sents
