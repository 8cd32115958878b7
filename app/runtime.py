"""Everything a process needs to code notes, built once: database, code sets, encoder, pipeline.

The HTTP lifespan and the CLI (suggest, batch, evaluate) both call `build_runtime`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from codebooks.bootstrap import prepare_database
from codebooks.db import make_engine
from codebooks.repository import CodebookRepository
from nlp.components.services import ServiceDetector
from nlp.config import PipelineConfig
from nlp.pipeline import Pipeline, build_pipeline


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    codebooks: CodebookRepository
    pipeline: Pipeline

    def close(self) -> None:
        self.engine.dispose()


def _encoder(settings: Settings, codebooks: CodebookRepository, codes: Any) -> Any | None:
    if not settings.use_encoder:
        return None
    # Imported here: torch/onnxruntime are only paid for when the encoder is on.
    from nlp.encoder import open_linker

    return open_linker(codes, settings.cache_dir, settings.encoder_model,
                       seventh_character_owners=codebooks.instructions("icd10cm", "seven_chr_def").keys())


def _service_detector(codebooks: CodebookRepository) -> ServiceDetector | None:
    if not codebooks.versions("cpt"):
        return None
    return ServiceDetector(codebooks.codes("cpt"))


def build_runtime(
    settings: Settings,
    *,
    progress: Callable[[str], Any] | None = None,
    use_encoder: bool | None = None,
) -> Runtime:
    """Open (and if needed create and fill) the code-set database and build the pipeline once."""
    if settings.resolved_database_url.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    sessions = prepare_database(engine, progress=progress)
    codebooks = CodebookRepository(sessions)
    codes = codebooks.codes("icd10cm")
    effective = settings if use_encoder is None else settings.model_copy(update={"use_encoder": use_encoder})
    scorer = _encoder(effective, codebooks, codes)
    config = PipelineConfig(
        threshold=settings.suggestion_threshold,
        max_note_chars=settings.max_note_chars,
        cache_dir=settings.cache_dir,
    )
    pipeline = build_pipeline(config, codebooks, scorer=scorer, service_detector=_service_detector(codebooks))
    return Runtime(settings, engine, sessions, codebooks, pipeline)
