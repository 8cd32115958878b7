"""Metrics of training/evaluate.py on hand-made gold notes and predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.evaluate import evaluate, load_gold, load_predictions, normalize_code, parse_gold_line

TEXT = "Assessment: hypertension and gout."


def sug(code: str, start: int = 12, end: int = 24, score: float = 0.9, system: str = "icd10cm") -> dict:
    return {"system": system, "code": code, "score": score,
            "evidence": [{"start": start, "end": end, "text": TEXT[start:end]}]}


def gold(**kw: object) -> object:
    base = {"id": "n1", "text": TEXT, "icd10cm": [{"code": "I10", "evidence": ["hypertension"]},
                                                  {"code": "M10.9", "evidence": ["gout"]}], "must_not": ["I11.9"]}
    base.update(kw)
    return parse_gold_line(base, 1)


def test_precision_recall_f1_map_and_p_at_5() -> None:
    r = evaluate([gold()], {"n1": [sug("I10"), sug("I11.9", score=0.5), sug("M10.9", 29, 33)]})
    s = r.systems["icd10cm"]
    assert (s.true_positives, s.predicted, s.gold) == (2, 3, 2)
    assert s.micro_precision == pytest.approx(2 / 3)
    assert s.micro_recall == 1.0
    assert s.micro_f1 == pytest.approx(0.8)
    assert s.map == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert s.p_at_5 == pytest.approx(2 / 5)
    assert r.trap_violations == 1 and r.trap_violation_rate == pytest.approx(1 / 3)
    assert r.evidence_valid_rate == 1.0
    assert r.evidence_overlap_rate == 1.0


def test_invalid_evidence_and_missing_evidence_are_counted() -> None:
    bad = sug("I10")
    bad["evidence"][0]["text"] = "something else"
    r = evaluate([gold()], {"n1": [bad, {"system": "icd10cm", "code": "M10.9", "score": 0.8, "evidence": []}]})
    assert r.evidence_valid_rate == 0.0


def test_evidence_overlap_misses_a_span_elsewhere() -> None:
    r = evaluate([gold()], {"n1": [sug("I10", 0, 10)]})
    assert r.evidence_overlap_rate == 0.0


def test_cpt_is_scored_separately() -> None:
    g = gold(cpt=[{"code": "36415", "evidence": []}])
    r = evaluate([g], {"n1": [sug("I10"), sug("36415", system="cpt")]})
    assert r.systems["cpt"].micro_f1 == 1.0
    assert r.systems["icd10cm"].true_positives == 1


def test_codiesp_format_and_truncated_gold_codes(tmp_path: Path) -> None:
    path = tmp_path / "codiesp.jsonl"
    path.write_text(json.dumps({"id": "S1", "text_en": "fracture of femur", "text_es": "x",
                                "icd10cm": ["s72001", "n390"], "icd10pcs": []}) + "\n")
    notes = load_gold(path)
    assert notes[0].codes["icd10cm"] == ("S72.001", "N39.0")
    billable = {"N39.0", "S72.001A"}
    r = evaluate(notes, {"S1": [{"code": "S72.001A", "score": 0.9, "evidence": []}]},
                 is_billable=lambda c: c in billable)
    assert r.systems["icd10cm"].true_positives == 1


def test_normalize_code() -> None:
    assert normalize_code("e1122") == "E11.22"
    assert normalize_code("99213") == "99213"


def test_load_predictions_reads_batch_output(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "n1", "suggestions": [sug("I10")]}) + "\n"
                    + json.dumps({"id": "n2", "error": {"code": "empty_text", "message": "x"}}) + "\n")
    preds = load_predictions(path)
    assert preds["n1"][0]["code"] == "I10" and preds["n2"] == []
