"""The pipeline API: evidence offsets, ranking, versions, warnings, errors, thread safety, encoder seam."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from codebooks.repository import CodebookRepository
from nlp.components.sentences import SentenceSplitter
from nlp.components.state import NoteState
from nlp.config import PipelineConfig
from nlp.errors import EmptyNote, PipelineOrderError, UnsupportedSetting
from nlp.pipeline import Pipeline, _check_order, build_pipeline
from nlp.types import CodingRequest
from tests.unit.nlp.conftest import code_note

pytestmark = pytest.mark.slow

NOTE = (
    "OFFICE VISIT\n"
    "HPI: 66 y/o with HTN and T2DM here for follow-up. Denies chest pain.\n"
    "Medications: metformin 500 mg BID, lisinopril 10 mg daily.\n"
    "Review of Systems: Respiratory: No cough.\n"
    "Assessment and Plan:\n"
    "1. Type 2 diabetes with diabetic polyneuropathy - continue metformin.\n"
    "2. Essential hypertension - at goal.\n"
    "3. Hyperlipidemia - continue statin.\n"
)


def test_every_evidence_span_indexes_the_exact_text(coding_pipeline: Pipeline) -> None:
    result = code_note(coding_pipeline, NOTE)
    assert result.suggestions
    for s in result.suggestions:
        assert s.evidence
        for e in s.evidence:
            assert NOTE[e.start:e.end] == e.text
            assert e.assertion in ("present", "historical", "uncertain", "family")


def test_assessment_order_gives_the_first_listed_diagnosis_rank_one(coding_pipeline: Pipeline) -> None:
    result = code_note(coding_pipeline, NOTE)
    ranked = [s.code for s in result.suggestions]
    assert ranked[0] == "E11.42"
    assert ranked.index("I10") < ranked.index("E78.5")
    assert [s.rank for s in result.suggestions] == list(range(1, len(ranked) + 1))
    assert all(0.0 <= s.score <= 1.0 for s in result.suggestions)
    assert "R07.9" not in ranked
    assert any(x.reason == "negated" and x.text == "chest pain" for x in result.excluded)


def test_sections_come_from_real_headers(coding_pipeline: Pipeline) -> None:
    result = code_note(coding_pipeline, NOTE)
    by_code = {s.code: s for s in result.suggestions}
    assert "Assessment and Plan" in {e.section for e in by_code["I10"].evidence}
    assert {e.section for e in by_code["Z79.84"].evidence} >= {"Medications"}


def test_versions_and_out_of_range_warning(coding_pipeline: Pipeline,
                                           codebook_repository: CodebookRepository) -> None:
    request = CodingRequest(text=NOTE, date_of_service=dt.date(2026, 5, 1), code_systems=("icd10cm",))
    result = coding_pipeline.code(request)
    assert result.codeset_versions["icd10cm"] == codebook_repository.codeset_version("icd10cm")
    assert result.rules_version.startswith("rules-")
    assert result.model_version
    old = coding_pipeline.code(CodingRequest(text=NOTE, date_of_service=dt.date(2015, 1, 1),
                                             code_systems=("icd10cm",)))
    assert any("outside" in w for w in old.warnings)


def test_threshold_and_max_suggestions(codebook_repository: CodebookRepository, coding_pipeline: Pipeline) -> None:
    strict = build_pipeline(PipelineConfig(threshold=0.95), codebook_repository)
    loose = code_note(coding_pipeline, NOTE)
    assert all(s.score >= 0.95 for s in code_note(strict, NOTE).suggestions)
    assert len(loose.suggestions) > len(code_note(strict, NOTE).suggestions)
    capped = coding_pipeline.code(CodingRequest(text=NOTE, max_suggestions=2, code_systems=("icd10cm",)))
    assert len(capped.suggestions) == 2


def test_errors_have_stable_codes(coding_pipeline: Pipeline) -> None:
    with pytest.raises(EmptyNote) as exc:
        coding_pipeline.code(CodingRequest(text="   \n"))
    assert exc.value.code == "empty_text"
    with pytest.raises(UnsupportedSetting) as exc2:
        coding_pipeline.code(CodingRequest(text=NOTE, setting="home"))
    assert exc2.value.code == "unsupported_setting"


def test_concurrent_calls_agree(coding_pipeline: Pipeline) -> None:
    notes = [NOTE, "Assessment: Acute maxillary sinusitis. Mild intermittent asthma.", NOTE.replace("HTN", "CHF")]
    expected = [tuple(s.code for s in code_note(coding_pipeline, n).suggestions) for n in notes]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda n: tuple(s.code for s in code_note(coding_pipeline, n).suggestions), notes * 4))
    assert got == expected * 4


def test_component_order_is_checked() -> None:
    class NeedsMentions:
        name = "needs"
        requires = ("spans",)
        assigns = ("x",)

        def __call__(self, state: NoteState) -> None:  # pragma: no cover - never run
            raise AssertionError

    with pytest.raises(PipelineOrderError):
        _check_order([SentenceSplitter(), NeedsMentions()])


class FakeScorer:
    """Links one known phrase with a chosen cosine (the encoder seam, without the model)."""

    version = "fake-1"
    min_cosine: float | None = None
    calibration: list[tuple[float, float]] | None = None

    def __init__(self, cosine: float) -> None:
        self.cosine = cosine
        self.calls: list[Sequence[str]] = []

    def link(self, phrases: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        self.calls.append(list(phrases))
        return [[("K57.92", self.cosine)] if "diverticular" in p.lower() else [("R69", 0.1)] for p in phrases]


class KidneyScorer(FakeScorer):
    """Links a vague renal phrase to CKD stage 3 with high confidence."""

    def link(self, phrases: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        return [[("N18.30", self.cosine)] if "renal" in p.lower() else [("R69", 0.1)] for p in phrases]


def test_a_code_only_the_encoder_found_never_rewrites_a_documented_one(
        codebook_repository: CodebookRepository) -> None:
    pipeline = build_pipeline(PipelineConfig(threshold=0.0), codebook_repository, scorer=KidneyScorer(0.95))
    text = "Assessment:\n1. Essential hypertension.\n2. Slowly declining renal reserve over years."
    codes = {s.code for s in pipeline.code(CodingRequest(text=text, code_systems=("icd10cm",))).suggestions}
    # The encoder's guess is suggested on its own; the documented hypertension stays I10 instead of becoming
    # the hypertensive CKD combination (I12.9) on the strength of that guess.
    assert {"I10", "N18.30"} <= codes and "I12.9" not in codes
    documented = "Assessment:\n1. Essential hypertension.\n2. Chronic kidney disease stage 3."
    codes = {s.code for s in pipeline.code(CodingRequest(text=documented, code_systems=("icd10cm",))).suggestions}
    assert "I12.9" in codes and "I10" not in codes


def test_the_scorers_own_floor_replaces_the_default(codebook_repository: CodebookRepository) -> None:
    def linked(scorer: FakeScorer, config: PipelineConfig) -> list[float]:
        pipeline = build_pipeline(config, codebook_repository, scorer=scorer)
        text = "Assessment:\n1. Flare of colonic diverticular inflammation."
        result = pipeline.code(CodingRequest(text=text, code_systems=("icd10cm",)))
        return [s.score for s in result.suggestions if s.code == "K57.92"]

    scorer = FakeScorer(0.45)
    assert linked(scorer, PipelineConfig(threshold=0.0)) == []  # under the rules' default floor (0.70)
    scorer.min_cosine = 0.4
    scores = linked(scorer, PipelineConfig(threshold=0.0))
    # Linked, and scored from the model's own floor: 0.1 there, +2 per unit of cosine above it, so a link
    # just over the floor ranks low and stays under the default threshold.
    assert len(scores) == 1 and scores[0] == pytest.approx(0.2, abs=0.01)
    scorer.cosine = 0.6
    assert linked(scorer, PipelineConfig(threshold=0.0)) == [pytest.approx(0.5, abs=0.01)]
    # A deployment's explicit floor still wins over the model's.
    assert linked(scorer, PipelineConfig(threshold=0.0, encoder_min_cosine=0.9)) == []


def test_a_calibrated_link_scores_its_measured_precision(codebook_repository: CodebookRepository) -> None:
    scorer = FakeScorer(0.55)
    scorer.min_cosine = 0.4
    scorer.calibration = [(0.4, 0.05), (0.6, 0.25), (0.8, 0.6)]
    pipeline = build_pipeline(PipelineConfig(threshold=0.0), codebook_repository, scorer=scorer)
    text = "Assessment:\n1. Flare of colonic diverticular inflammation.\n2. Essential hypertension."
    result = pipeline.code(CodingRequest(text=text, code_systems=("icd10cm",)))
    by_code = {s.code: s for s in result.suggestions}
    linked = by_code["K57.92"]
    assert linked.score == pytest.approx(0.05 + 0.75 * 0.2, abs=0.005)  # interpolated between the knots
    assert [f.kind for f in linked.flags] == ["similarity"]
    assert not any(f.kind == "similarity" for f in by_code["I10"].flags)
    # A similarity guess ranks by its score, after the documented diagnosis, although it was listed first:
    # only documented codes keep the assessment's order.
    assert [s.code for s in result.suggestions].index("I10") < [s.code for s in result.suggestions].index("K57.92")
    scorer.cosine = 0.95  # beyond the last knot the estimate stays flat
    result = pipeline.code(CodingRequest(text=text, code_systems=("icd10cm",)))
    assert {s.code: s.score for s in result.suggestions}["K57.92"] == pytest.approx(0.6, abs=0.005)


def test_an_uncalibrated_link_scores_linearly_from_the_rules_floor(codebook_repository: CodebookRepository) -> None:
    # No model.json floor or calibration (the base model): 0.1 at the rules' floor (0.70) plus 2 per unit above.
    pipeline = build_pipeline(PipelineConfig(threshold=0.0), codebook_repository, scorer=FakeScorer(0.95))
    text = "Assessment:\n1. Flare of colonic diverticular inflammation."
    result = pipeline.code(CodingRequest(text=text, code_systems=("icd10cm",)))
    assert {s.code: s.score for s in result.suggestions}["K57.92"] == pytest.approx(0.6, abs=0.005)
    low = build_pipeline(PipelineConfig(threshold=0.0), codebook_repository, scorer=FakeScorer(0.65))
    assert "K57.92" not in {s.code for s in low.code(CodingRequest(text=text, code_systems=("icd10cm",))).suggestions}


def test_plan_statements_and_headers_are_not_sent_to_the_encoder(codebook_repository: CodebookRepository) -> None:
    scorer = FakeScorer(0.95)
    pipeline = build_pipeline(PipelineConfig(threshold=0.0), codebook_repository, scorer=scorer)
    text = ("Assessment and Plan\n1. Flare of colonic diverticular inflammation.\n"
            "2. Continue diverticular diet education.\n3. Return in 3 months for recheck.")
    pipeline.code(CodingRequest(text=text, code_systems=("icd10cm",)))
    sent = [p.lower() for call in scorer.calls for p in call]
    assert any(p.startswith("flare of colonic") for p in sent)
    assert not any(p.startswith(("continue", "return", "assessment")) for p in sent)


@pytest.mark.parametrize(("cosine", "linked"), [(0.95, True), (0.6, False)])
def test_encoder_links_unmatched_assessment_phrases_conservatively(
        codebook_repository: CodebookRepository, cosine: float, linked: bool) -> None:
    scorer = FakeScorer(cosine)
    pipeline = build_pipeline(PipelineConfig(threshold=0.0), codebook_repository, scorer=scorer)
    text = "Assessment:\n1. Flare of colonic diverticular inflammation.\n2. Essential hypertension."
    result = pipeline.code(CodingRequest(text=text, code_systems=("icd10cm",)))
    assert scorer.calls and all("hypertension" not in p.lower() for p in scorer.calls[0])
    assert ("K57.92" in {s.code for s in result.suggestions}) is linked
    assert result.model_version.endswith("fake-1")
