"""First use: create or migrate the schema and fill the default code sets when they are missing."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from codebooks.db import migrate, session_factory
from codebooks.loaders.common import LoadReport, Progress
from codebooks.loaders.cpt import load_curated_cpt
from codebooks.loaders.icd10cm import load_icd10cm
from codebooks.models import CodeSetVersion

ProgressFactory = Callable[[str], Progress | None]


def has_system(sessions: sessionmaker[Session], system: str) -> bool:
    with sessions() as s:
        return (
            s.scalar(
                select(CodeSetVersion.id)
                .where(CodeSetVersion.system_name == system, CodeSetVersion.is_complete)
                .limit(1)
            )
            is not None
        )


def load_defaults(
    sessions: sessionmaker[Session], *, force: bool = False, progress: ProgressFactory | None = None
) -> list[LoadReport]:
    """Load the embedded default code sets (ICD-10-CM FY2026 tabular, curated CPT); each in one transaction."""
    reports = []
    for label, loader in (("ICD-10-CM", load_icd10cm), ("CPT (curated)", load_curated_cpt)):
        with sessions.begin() as s:
            reports.append(loader(s, force=force, progress=progress(label) if progress else None))
    return reports


def prepare_database(engine: Engine, *, progress: ProgressFactory | None = None) -> sessionmaker[Session]:
    """Migrate the schema and load default code sets if none are loaded yet."""
    migrate(engine)
    sessions = session_factory(engine)
    if not (has_system(sessions, "icd10cm") and has_system(sessions, "cpt")):
        load_defaults(sessions, progress=progress)
    return sessions
