"""`notecoder serve`, `apikey`, `user`, `audit` and `notes`."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.settings import Settings

apikey_app = typer.Typer(no_args_is_help=True, help="API keys for EHR systems, coders and admins.")
user_app = typer.Typer(no_args_is_help=True, help="Logins for the coder review UI.")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
notes_app = typer.Typer(no_args_is_help=True, help="Note text kept for the review UI.")


def _engine():  # type: ignore[no-untyped-def]
    """The configured database with the service tables migrated (code sets are not needed here)."""
    from app.services.storage import migrate_app
    from app.settings import Settings
    from codebooks.db import make_engine

    engine = make_engine(Settings().resolved_database_url)
    migrate_app(engine)
    return engine


# ---- serve ------------------------------------------------------------------------------------
def _build_and_close(settings: Settings) -> None:
    from app.runtime import build_runtime

    build_runtime(settings).close()


def warm_caches(settings: Settings) -> None:
    """Build the runtime once in a throw-away process so that its caches (dictionary automaton, code
    embeddings) exist before N workers start: otherwise every worker builds them at once, N times the work,
    all racing to write the same cache files."""
    import multiprocessing

    from app.cli import err, fail

    err.print("preparing pipeline caches for the workers ...")
    process = multiprocessing.get_context("spawn").Process(target=_build_and_close, args=(settings,))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise fail(f"the pipeline could not be built (exit {process.exitcode}); see the error above", 1)


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes, each with its own model")] = 1,
) -> None:
    """Run the API (and UI): creates/migrates the database and loads the default code sets first."""
    import uvicorn

    from app.cli import open_codebooks
    from app.services.storage import migrate_app
    from app.settings import Settings
    from codebooks.db import make_engine

    settings = Settings()
    # Once, before any worker starts: workers then only read the schema and code sets, never race to create them.
    open_codebooks(settings)
    engine = make_engine(settings.resolved_database_url)
    migrate_app(engine)
    engine.dispose()
    if workers > 1:
        warm_caches(settings)
        # Every worker writes its metric values here; /metrics on any worker sums them (see app/metrics.py).
        metrics_dir = settings.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    uvicorn.run(
        "app.main:create_app_from_env", factory=True, host=host, port=port, workers=workers,
        # Our middleware logs each request without query strings or bodies; uvicorn's access log is off.
        access_log=False, log_level=settings.log_level.lower(),
    )


# ---- apikey -----------------------------------------------------------------------------------
@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="Who uses the key, e.g. epic-prod")],
    role: Annotated[str, typer.Option(help="ehr, coder or admin")] = "ehr",
) -> None:
    """Create a key; it is printed once, alone on the last line, and stored only as a salted hash."""
    from app.auth import AuthError, create_api_key
    from app.cli import fail
    from app.services.storage import write_session

    try:
        with write_session(_engine()) as session:
            created = create_api_key(session, name, role)
    except AuthError as exc:
        raise fail(exc.message) from exc
    typer.echo(f"created {created.role} key {created.key_id} for {created.name}; store it now, it is not shown again:")
    typer.echo(created.key)


@apikey_app.command("list")
def apikey_list() -> None:
    """List keys (id, name, role, state); secrets are never shown."""
    from sqlalchemy.orm import Session

    from app.auth import list_api_keys

    with Session(_engine()) as session:
        for k in list_api_keys(session):
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            typer.echo(f"{k.key_id}  {k.role:<5}  {state:<18}  {k.name}")


@apikey_app.command("revoke")
def apikey_revoke(key_id: str) -> None:
    """Revoke a key by its id (the 12 characters after `nc_`)."""
    from app.auth import revoke_api_key
    from app.cli import fail
    from app.services.storage import write_session

    with write_session(_engine()) as session:
        if not revoke_api_key(session, key_id):
            raise fail(f"no key {key_id}", 1)
    typer.echo(f"revoked {key_id}")


# ---- user -------------------------------------------------------------------------------------
@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Option(help="Login name")],
    role: Annotated[str, typer.Option(help="coder or admin")] = "coder",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin")] = False,
) -> None:
    """Create a UI login; the password is prompted for (or read from stdin) and stored as an scrypt hash."""
    from app.auth import AuthError, create_user
    from app.cli import fail
    from app.services.storage import write_session

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        with write_session(_engine()) as session:
            user = create_user(session, username, role, password)
    except AuthError as exc:
        raise fail(exc.message) from exc
    typer.echo(f"created {user.role} user {user.username}")


# ---- audit ------------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the hash chain: `ok <N> records` and exit 0, or name the first broken record and exit 1."""
    from sqlalchemy.orm import Session

    from app import audit

    with Session(_engine()) as session:
        result = audit.verify(session)
    if result.ok:
        typer.echo(f"ok {result.count} records")
        return
    where = f"record {result.broken_seq}" if result.broken_seq is not None else "the chain head"
    rid = f" (request {result.broken_request_id})" if result.broken_request_id else ""
    typer.echo(f"broken at {where}{rid}: {result.reason}; {result.count} records before it verify", err=True)
    raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    since: Annotated[str | None, typer.Option(help="Only records from this date or ISO time on (UTC)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="JSONL file (default: stdout)")] = None,
) -> None:
    """Write the audit records as JSON lines (hashed body plus its hash), oldest first."""
    from sqlalchemy.orm import Session

    from app import audit
    from app.cli import fail

    start = None
    if since:
        try:
            start = dt.datetime.fromisoformat(since)
        except ValueError as exc:
            raise fail(f"{since!r} is not a date or ISO time") from exc
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
    stream = out.open("w", encoding="utf-8") if out else sys.stdout
    count = 0
    try:
        with Session(_engine()) as session:
            for record in audit.export(session, since=start):
                stream.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
                count += 1
    finally:
        if out:
            stream.close()
    if out:
        typer.echo(f"wrote {count} records to {out}")


# ---- notes ------------------------------------------------------------------------------------
@notes_app.command("purge")
def notes_purge() -> None:
    """Delete stored note text whose retention period has ended."""
    from app.notes import NoteStore
    from app.services.storage import write_session
    from app.settings import Settings

    settings = Settings()
    store = NoteStore("", settings.note_retention_days)
    with write_session(_engine()) as session:
        removed = store.purge(session)
    typer.echo(f"purged {removed} expired notes")


def register(app: typer.Typer) -> None:
    """Add the service commands to `app`."""
    app.command("serve")(serve)
    app.add_typer(apikey_app, name="apikey")
    app.add_typer(user_app, name="user")
    app.add_typer(audit_app, name="audit")
    app.add_typer(notes_app, name="notes")
