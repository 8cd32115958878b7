"""The service tables' schema and the write transactions that must not interleave across workers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from codebooks.db import run_migrations

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def migrate_app(engine: Engine) -> None:
    """Create or upgrade the service tables (api keys, users, runs, reviews, notes, audit) to the latest revision."""
    run_migrations(engine, MIGRATIONS_DIR)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextlib.contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session whose transaction holds the database's write lock from its first statement on SQLite.

    SQLite's default deferred transactions take the write lock at the first write; two workers that both
    read the audit chain head first would then fail with SQLITE_BUSY instead of waiting. BEGIN IMMEDIATE
    makes them queue. On PostgreSQL callers lock rows (`SELECT ... FOR UPDATE`) instead.
    """
    with Session(bind=engine, expire_on_commit=False) as session:
        if is_sqlite(engine):
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
