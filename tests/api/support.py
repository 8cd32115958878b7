"""Test support for the HTTP service: a keyword pipeline over the real code sets, fresh databases, keys.

The keyword pipeline stands in for the NLP pipeline so that API behaviour (auth, audit, review, errors)
is tested on its own; it reads descriptions and versions from the real codebook repository, and its
evidence spans are real offsets into the submitted text. The real pipeline is exercised in tests/e2e.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.auth import create_api_key
from app.services.storage import migrate_app, write_session
from codebooks.db import make_engine, session_factory
from codebooks.repository import CodebookRepository
from nlp.errors import UnsupportedSetting
from nlp.types import CodingRequest, CodingResult, Evidence, Excluded, Suggestion

# Longest phrases first: "type 2 diabetes mellitus with diabetic polyneuropathy" wins over its prefix.
PHRASES: tuple[tuple[str, str, str], ...] = (
    ("type 2 diabetes mellitus with diabetic polyneuropathy", "icd10cm", "E11.42"),
    ("type 2 diabetes mellitus", "icd10cm", "E11.9"),
    ("type 1 diabetes mellitus", "icd10cm", "E10.9"),
    ("essential hypertension", "icd10cm", "I10"),
    ("asthma", "icd10cm", "J45.909"),
    ("pneumonia", "icd10cm", "J18.9"),
    ("venipuncture", "cpt", "36415"),
    ("electrocardiogram", "cpt", "93000"),
)
NEGATION = re.compile(r"\b(no|denies|without)\s+(\w+\s+){0,2}$", re.IGNORECASE)
BOOM = "TRIGGER-PIPELINE-FAILURE"
REFUSE = "TRIGGER-PIPELINE-REFUSAL"


class KeywordPipeline:
    model_version = "keyword-test-1"
    rules_version = "keyword-rules-1"

    def __init__(self, codebooks: CodebookRepository) -> None:
        self.codebooks = codebooks
        self.descriptions = {
            (system, code): codebooks.codes(system)[code].description
            for _, system, code in PHRASES
        }
        self.calls = 0
        self.last_request: CodingRequest | None = None

    def code(self, request: CodingRequest) -> CodingResult:
        self.calls += 1
        self.last_request = request
        if BOOM in request.text:
            raise RuntimeError(f"pipeline failed on {request.text[:40]}")
        if REFUSE in request.text:
            raise UnsupportedSetting("the pipeline refuses this note; send a supported setting")
        lowered = request.text.lower()
        taken: list[tuple[int, int]] = []
        found: dict[tuple[str, str], list[Evidence]] = {}
        excluded: list[Excluded] = []
        for phrase, system, code in PHRASES:
            if system not in request.code_systems:
                continue
            for m in re.finditer(re.escape(phrase), lowered):
                if any(s < m.end() and m.start() < e for s, e in taken):
                    continue
                taken.append((m.start(), m.end()))
                text = request.text[m.start():m.end()]
                if NEGATION.search(lowered[max(0, m.start() - 30):m.start()]):
                    excluded.append(Excluded(text=text, start=m.start(), end=m.end(), reason="negated",
                                             candidate_codes=(code,)))
                    continue
                found.setdefault((system, code), []).append(
                    Evidence(start=m.start(), end=m.end(), text=text, section="Assessment")
                )
        suggestions = []
        for rank, ((system, code), evidence) in enumerate(found.items(), start=1):
            if rank > request.max_suggestions:
                break
            suggestions.append(Suggestion(system=system, code=code, description=self.descriptions[(system, code)],
                                          score=round(0.95 - 0.05 * rank, 4), evidence=tuple(evidence), rank=rank))
        versions = {s: self.codebooks.codeset_version(s, request.date_of_service) for s in request.code_systems}
        return CodingResult(suggestions=tuple(suggestions), excluded=tuple(excluded), model_version=self.model_version,
                            rules_version=self.rules_version, codeset_versions=versions)


@dataclass
class KeywordRuntime:
    engine: Engine
    sessions: sessionmaker[Session]
    codebooks: CodebookRepository
    pipeline: KeywordPipeline


def copy_database(template: Path, folder: Path) -> str:
    """A private copy of the loaded code-set database (SQLite), as a URL."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "notecoder.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def keyword_runtime(url: str) -> KeywordRuntime:
    engine = make_engine(url)
    sessions = session_factory(engine)
    repo = CodebookRepository(sessions)
    return KeywordRuntime(engine=engine, sessions=sessions, codebooks=repo, pipeline=KeywordPipeline(repo))


def make_keys(engine: Engine) -> dict[str, str]:
    """One API key per role (the app tables are created first)."""
    migrate_app(engine)
    keys = {}
    with write_session(engine) as session:
        for role in ("ehr", "coder", "admin"):
            keys[role] = create_api_key(session, f"test-{role}", role).key
    return keys


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
