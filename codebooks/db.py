"""Engine and schema management. Nothing here runs at import time."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for `url`; SQLite files get their folder created, WAL and foreign keys."""
    parsed = make_url(url)
    kwargs: dict[str, object] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)  # type: ignore[arg-type]
    if parsed.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def run_migrations(engine: Engine, migrations_dir: Path) -> None:
    """Upgrade the tables of one Alembic environment (its own version table) to its latest revision.

    `codebooks` and `app` each keep their own environment; this is the one way both are applied.
    """
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir))
        cfg.attributes["engine"] = engine
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def migrate(engine: Engine) -> None:
    """Create or upgrade the code-set schema to the latest revision."""
    run_migrations(engine, MIGRATIONS_DIR)
