"""Shared fixtures: real databases built in temporary folders, never the working directory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from codebooks.bootstrap import prepare_database
from codebooks.db import make_engine
from codebooks.repository import CodebookRepository

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PG_ADMIN_URL = os.environ.get("NOTECODER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data; a missing one fails the test (CI has the folder), never skips it."""
    path = SHARED_DATA.joinpath(*parts)
    assert path.exists(), f"{path} is missing: tests read the reference data from ../shared/data"
    return path


@pytest.fixture(scope="session")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A real SQLite file with the default code sets (ICD-10-CM FY2026 + curated CPT), built once per run."""
    path = tmp_path_factory.mktemp("codebooks") / "notecoder.db"
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def codebook_sessions(sqlite_engine: Engine) -> sessionmaker[Session]:
    return prepare_database(sqlite_engine)


@pytest.fixture(scope="session")
def codebook_repository(codebook_sessions: sessionmaker[Session]) -> CodebookRepository:
    return CodebookRepository(codebook_sessions)


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server (127.0.0.1:5432); fails loudly when unreachable."""
    admin = make_engine(PG_ADMIN_URL)
    name = f"notecoder_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - turn any driver error into a clear failure
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
