"""The real pipeline (dictionary + rules, no encoder) on the development set: evidence validity, trap
violations and accuracy at the thresholds this version achieves (see docs/EVALUATION.md)."""

from __future__ import annotations

import pytest

from app.services.batch import code_line
from codebooks.repository import CodebookRepository
from nlp.config import PipelineConfig
from nlp.pipeline import build_pipeline
from tests.conftest import shared_file
from training.evaluate import evaluate, load_gold

pytestmark = pytest.mark.slow


def test_dev_set_accuracy_evidence_and_traps(codebook_repository: CodebookRepository,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    gold = load_gold(shared_file("dev", "dev_notes.jsonl"))
    pipeline = build_pipeline(PipelineConfig(threshold=0.4, cache_dir=tmp_path_factory.mktemp("c")),
                              codebook_repository)
    predictions = {}
    for note in gold:
        row, body = code_line(pipeline, {"id": note.id, "text": note.text, "setting": note.setting,
                                         "date_of_service": note.date_of_service, "patient": dict(note.patient),
                                         "code_systems": ["icd10cm"]}, None)
        assert "error" not in row, row
        predictions[note.id] = row["suggestions"]
        for s in row["suggestions"]:
            assert s["evidence"], s
            for e in s["evidence"]:
                assert note.text[e["start"]:e["end"]] == e["text"]
    codes = codebook_repository.codes("icd10cm")
    report = evaluate(gold, predictions, is_billable=lambda c: bool(codes.get(c) and codes[c].is_billable))
    icd = report.systems["icd10cm"]
    assert report.evidence_valid_rate == 1.0
    assert report.trap_violation_rate <= 0.02
    assert icd.micro_f1 >= 0.90
    assert icd.micro_precision >= 0.92
    assert icd.micro_recall >= 0.88
    assert icd.map >= 0.88
