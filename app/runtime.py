"""Everything a process needs to code notes, built once: database, code sets, encoder, pipeline.

The HTTP lifespan and the CLI (suggest, batch, evaluate) both call `build_runtime`.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)


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
    from pathlib import Path

    from nlp.encoder import CodeLinker, default_model_dir

    owners = codebooks.instructions("icd10cm", "seven_chr_def").keys()
    choice = settings.encoder_model.strip()
    model_dir = Path(choice).expanduser() if choice and choice.lower() != "base" else default_model_dir()
    use_base = choice.lower() == "base"
    if not use_base and not choice and not (model_dir / "model.json").is_file():
        # A checkout without the committed adapter still runs, on the base MiniLM.
        log.info("no fine-tuned encoder under %s; using the base model", model_dir)
        use_base = True
    return CodeLinker(codes, settings.cache_dir, model_dir=model_dir, seventh_character_owners=owners,
                      use_base_model=use_base)


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
