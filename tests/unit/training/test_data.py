"""Pair building for the encoder: index phrases, abbreviation tables, family split, siblings."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from nlp.types import CodeInfo
from tests.conftest import shared_file
from training.args import ConfigError, TrainingArguments
from training.data import (
    Pair,
    TargetMap,
    abbreviation_pairs,
    add_training_only,
    build_siblings,
    case_report_clauses,
    clean_phrase,
    codiesp_clause_pairs,
    index_pairs,
    index_phrase,
    read_codiesp,
    read_phrase_table,
    split_pairs,
    split_terms,
)


def test_index_phrase_puts_modifiers_before_and_clauses_after_the_main_term() -> None:
    assert index_phrase(["Failure, failed", "heart", "congestive (compensated)"]) == "congestive heart Failure"
    assert index_phrase(["Diabetes, diabetic (mellitus)", "type 2", "with", "neuropathy"]) == (
        "type 2 Diabetes with neuropathy"
    )
    assert index_phrase(["Pneumonia", "aspiration", "due to", "food"]) == "aspiration Pneumonia due to food"


def test_clean_phrase_drops_nonessential_modifiers_and_nec() -> None:
    assert clean_phrase("Hypertension (arterial) (benign) NEC") == "Hypertension"


def _codes() -> dict[str, CodeInfo]:
    rows = [
        ("S72", "Fracture of femur", False, None),
        ("S72.001", "Fracture of unspecified part of neck of right femur", False, "S72"),
        ("S72.001A", "Fracture of unspecified part of neck of right femur, initial encounter", True, "S72.001"),
        ("S72.001D", "Fracture of unspecified part of neck of right femur, subsequent encounter", True, "S72.001"),
        ("I10", "Essential (primary) hypertension", True, None),
        ("I50", "Heart failure", False, None),
        ("I50.9", "Heart failure, unspecified", True, "I50"),
        ("I50.1", "Left ventricular failure, unspecified", True, "I50"),
    ]
    return {c: CodeInfo("icd10cm", c, d, b, p) for c, d, b, p in rows}


def test_target_map_sends_seventh_character_codes_to_their_base_and_skips_categories() -> None:
    to_target = TargetMap(_codes(), owners={"S72"})
    assert set(to_target.targets) == {"S72.001", "I10", "I50.9", "I50.1"}
    assert to_target("S72.001D") == "S72.001"
    assert to_target("I509") == "I50.9"
    assert to_target("I50") is None


def test_phrase_table_with_usual_column_names_gives_direct_and_substituted_pairs(tmp_path: Path) -> None:
    path = tmp_path / "abbr.csv"
    path.write_text("# comment\nAbbr,Expansion,Code\nCHF,heart failure,I50.9\nHTN,hypertension,I10\n")
    table = read_phrase_table(path)
    assert table == [("CHF", "heart failure", "I50.9"), ("HTN", "hypertension", "I10")]
    to_target = TargetMap(_codes(), owners={"S72"})
    base = [Pair("left heart failure", "I50.1", "index")]
    pairs = abbreviation_pairs(table, base, to_target, max_variants=5, rng=random.Random(0))
    assert Pair("CHF", "I50.9", "abbreviation") in pairs
    assert Pair("left CHF", "I50.1", "abbreviation_variant") in pairs
    assert read_phrase_table(tmp_path / "missing.csv") == []


def test_split_holds_out_whole_families() -> None:
    targets = {f"{chr(65 + i)}{j:02d}.0": "x" for i in range(5) for j in range(10)}
    pairs = [Pair(f"phrase {c}", c, "index") for c in targets]
    train, test, held_out = split_pairs(pairs, targets, test_fraction=0.2, max_test=1000, rng=random.Random(1))
    assert len(held_out) == 10
    assert {p.code[:3] for p in test} == held_out
    assert not {p.code[:3] for p in train} & held_out
    assert len(train) + len(test) == len(pairs)


def test_term_split_keeps_a_training_phrase_for_every_held_out_code() -> None:
    pairs = [Pair(f"wording {i} of {c}", c, "index") for c in ("A01.0", "A01.1", "B02.9") for i in range(3)]
    pairs += [Pair("lonely wording", "C03.0", "index"), Pair("abbr", "A01.0", "abbreviation")]
    train, test = split_terms(pairs, fraction=0.9, max_test=100, rng=random.Random(4))
    assert test and len(train) + len(test) == len(pairs)
    assert all(p.source == "index" for p in test)  # abbreviations always stay in training
    assert {p.code for p in test} <= {p.code for p in train}
    assert Pair("lonely wording", "C03.0", "index") in train  # its code's only phrase
    assert not set(train) & set(test)
    assert split_terms(pairs, fraction=0.5, max_test=2, rng=random.Random(4))[1].__len__() == 2
    assert split_terms(pairs, fraction=0.0, max_test=100, rng=random.Random(4)) == (pairs, [])


def test_siblings_share_a_parent_prefix() -> None:
    sib = build_siblings(["I50.1", "I50.9", "I10", "E11.9", "E11.65"])
    assert sib["I50.1"] == ["I50.9"]
    assert "I10" not in sib


def test_index_csv_rows_become_phrases_of_targets() -> None:
    to_target = TargetMap(_codes(), owners={"S72"})
    pairs = index_pairs(shared_file("refdata", "icd10cm_2025_index_wbdill", "csv", "ICD10CM_2025_Index.csv"), to_target)
    by_code: dict[str, list[str]] = {}
    for p in pairs:
        by_code.setdefault(p.code, []).append(p.anchor.lower())
    assert "hypertension" in by_code["I10"]
    assert any("heart failure" in a for a in by_code["I50.9"])


def test_config_rejects_unknown_fields_and_objectives(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('lerning_rate = 0.1\n')
    with pytest.raises(ConfigError) as err:
        TrainingArguments.from_toml(bad)
    assert err.value.code == "training_config_invalid"
    bad.write_text('objective = "triplet"\n')
    with pytest.raises(ConfigError):
        TrainingArguments.from_toml(bad)
    # Calibrating needs CodiEsp documents kept out of training (those after codiesp_clause_docs).
    bad.write_text('calibration_docs = 100\ncodiesp_clause_docs = 0\n')
    with pytest.raises(ConfigError, match="codiesp_clause_docs"):
        TrainingArguments.from_toml(bad)
    good = tmp_path / "good.toml"
    good.write_text('max_steps = 7\noutput_dir = "/tmp/x"\n')
    args = TrainingArguments.from_toml(good, seed=5)
    assert (args.max_steps, args.seed, args.resolve(args.output_dir)) == (7, 5, Path("/tmp/x"))


_VOCAB: dict[str, int] = {}


def _bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """A transparent stand-in for the base model: L2-normalised word counts (one vocabulary for every call)."""
    rows = [[_VOCAB.setdefault(w, len(_VOCAB)) for w in re.findall(r"[a-z]+", t.lower())] for t in texts]
    out = np.zeros((len(texts), 512), dtype=np.float32)
    for i, ids in enumerate(rows):
        for j in ids:
            out[i, j] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_codiesp_clause_pairs_pair_each_gold_code_with_its_closest_case_report_clause() -> None:
    to_target = TargetMap(_codes(), owners={"S72"})
    text = ("A 70-year-old man with chronic heart failure, who presented with right femur neck fracture after a fall. "
            "Blood pressure was normal.")
    docs = [(text, ["I509", "S72001A", "Z99.9"])]
    assert "chronic heart failure" in case_report_clauses(text)
    pairs = codiesp_clause_pairs(docs, to_target, to_target.targets, _bag_of_words, min_cosine=0.45)
    assert {(p.anchor, p.code, p.source) for p in pairs} == {
        ("chronic heart failure", "I50.9", "codiesp_clause"),
        ("right femur neck fracture", "S72.001", "codiesp_clause"),
    }
    # A clause is given to the gold code closest to it only, and weak matches are not paired at all.
    both = [("Echocardiography showed left ventricular failure.", ["I50.9", "I50.1"])]
    pairs = codiesp_clause_pairs(both, to_target, to_target.targets, _bag_of_words, min_cosine=0.45)
    assert [(p.anchor, p.code) for p in pairs] == [("Echocardiography showed left ventricular failure", "I50.1")]
    assert codiesp_clause_pairs(docs, to_target, to_target.targets, _bag_of_words, min_cosine=0.9) == []


def test_read_codiesp_reads_the_first_documents_only(tmp_path: Path) -> None:
    path = tmp_path / "codiesp.jsonl"
    rows = [{"id": str(i), "text_en": f"note {i}", "icd10cm": [f"r{i:02d}"]} for i in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert read_codiesp(path, docs=2) == [("note 0", ["r00"]), ("note 1", ["r01"])]
    assert len(read_codiesp(path)) == 5


def test_pairs_added_after_the_split_never_touch_a_held_out_family_or_phrase() -> None:
    train = [Pair("heart failure nos", "I50.9", "index")]
    held_out = [Pair("Left  Ventricular failure", "I50.1", "index")]
    extra = [
        Pair("left ventricular failure", "I50.9", "codiesp_clause"),  # a held-out phrase (case and spaces aside)
        Pair("femur neck fracture", "S72.001", "codiesp_clause"),  # a held-out family
        Pair("Heart failure NOS", "I50.9", "codiesp_clause"),  # already a training phrase
        Pair("decompensated heart failure", "I50.9", "codiesp_clause"),
        Pair("decompensated  heart failure", "I10", "codiesp_clause"),  # repeats an earlier extra phrase
    ]
    out = add_training_only(train, extra, held_out_families={"S72"}, held_out_pairs=held_out)
    assert out == [*train, Pair("decompensated heart failure", "I50.9", "codiesp_clause")]
    assert train == [Pair("heart failure nos", "I50.9", "index")]  # the input list is left as it was
