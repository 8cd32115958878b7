"""Fixtures for the pipeline tests: the real pipeline over the real code-set database (built once)."""

from __future__ import annotations

import pytest

from codebooks.repository import CodebookRepository
from nlp.config import PipelineConfig
from nlp.pipeline import Pipeline, build_pipeline
from nlp.types import CodingRequest, CodingResult, Patient


@pytest.fixture(scope="session")
def coding_pipeline(codebook_repository: CodebookRepository, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The pipeline without encoder or CPT detector, threshold 0 so that every candidate is visible."""
    cache = tmp_path_factory.mktemp("nlp-cache")
    return build_pipeline(PipelineConfig(threshold=0.0, cache_dir=cache), codebook_repository)


def code_note(pipeline: Pipeline, text: str, setting: str = "outpatient", age: int | None = 60,
              sex: str | None = "female") -> CodingResult:
    return pipeline.code(CodingRequest(text=text, setting=setting, patient=Patient(age=age, sex=sex),  # type: ignore[arg-type]
                                       code_systems=("icd10cm",), max_suggestions=50))


def codes(result: CodingResult, min_score: float = 0.4) -> set[str]:
    """Codes suggested at or above the production threshold."""
    return {s.code for s in result.suggestions if s.score >= min_score}


def assertion_of(pipeline: Pipeline, text: str, phrase: str, setting: str = "outpatient") -> str:
    """The assertion ConText (plus section rules) gives the mention whose text is `phrase`."""
    mentions = pipeline.mentions(CodingRequest(text=text, setting=setting))
    found = [m for m in mentions if m.text.lower() == phrase.lower()]
    assert found, f"no mention {phrase!r}; got {[m.text for m in mentions]}"
    return found[0].assertion
