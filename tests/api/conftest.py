"""Fixtures for the API tests: each test module gets its own copy of the code-set database, an app built by
`create_app(test_settings, runtime=...)` and one API key per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.main import create_app
from app.settings import Settings
from tests.api.support import KeywordRuntime, auth, copy_database, keyword_runtime, make_keys


@pytest.fixture(scope="session")
def template_db(sqlite_engine: Engine, codebook_sessions: sessionmaker[Session]) -> Path:
    """The session's loaded code-set database, checkpointed so its main file holds every page."""
    with sqlite_engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert sqlite_engine.url.database
    return Path(sqlite_engine.url.database)


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]
    runtime: KeywordRuntime
    settings: Settings

    def headers(self, role: str) -> dict[str, str]:
        return auth(self.keys[role])


def start_api(template: Path, folder: Path, **overrides: object) -> Iterator[Api]:
    url = copy_database(template, folder)
    settings = Settings(data_dir=folder, database_url=url, **overrides)  # type: ignore[arg-type]
    runtime = keyword_runtime(url)
    keys = make_keys(runtime.engine)
    app = create_app(settings, runtime=runtime)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client=client, keys=keys, runtime=runtime, settings=settings)
    runtime.engine.dispose()


@pytest.fixture(scope="module")
def api(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from start_api(template_db, tmp_path_factory.mktemp("api"))
