"""The audit chain (append, verify, tampering, export) and the service CLI commands, on real SQLite files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app import audit
from app.auth import authenticate_user, verify_api_key
from app.cli import app as cli
from app.models import AuditRecord, StoredNote
from app.notes import NoteStore
from app.services.storage import migrate_app, write_session
from codebooks.db import make_engine

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("NOTECODER_DATABASE_URL", url)
    monkeypatch.setenv("NOTECODER_DATA_DIR", str(tmp_path))
    engine = make_engine(url)
    migrate_app(engine)
    return engine


def fill(engine: Engine, n: int) -> None:
    for i in range(n):
        with write_session(engine) as s:
            audit.append(s, kind="suggest", request_id=f"req{i:04d}", principal="apikey:test#abc",
                         data={"note_sha256": f"{i:064x}", "note_chars": 10 + i,
                               "suggestions": [{"system": "icd10cm", "code": "I10", "score": 0.5, "rank": 1}]})


def verify_cli() -> tuple[int, str]:
    result = runner.invoke(cli, ["audit", "verify"])
    return result.exit_code, result.output


def test_an_intact_chain_verifies(db: Engine) -> None:
    fill(db, 5)
    assert verify_cli() == (0, "ok 5 records\n")
    with Session(db) as s:
        rows = s.query(AuditRecord).order_by(AuditRecord.seq).all()
    assert rows[0].prev_hash == audit.GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))
    assert json.loads(rows[2].body)["seq"] == 3


def test_an_empty_chain_verifies(db: Engine) -> None:
    assert verify_cli() == (0, "ok 0 records\n")


def test_an_edited_record_is_named(db: Engine) -> None:
    fill(db, 6)
    with Session(db) as s, s.begin():
        body = s.get(AuditRecord, 4).body  # type: ignore[union-attr]
        s.execute(update(AuditRecord).where(AuditRecord.seq == 4)
                  .values(body=body.replace('"score":0.5', '"score":0.9')))
    code, output = verify_cli()
    assert code == 1
    assert "record 4" in output and "req0003" in output


def test_a_rehashed_record_breaks_the_link_to_the_next(db: Engine) -> None:
    fill(db, 6)
    with Session(db) as s, s.begin():
        body = s.get(AuditRecord, 2).body.replace('"score":0.5', '"score":0.9')  # type: ignore[union-attr]
        s.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(body=body, hash=audit.sha256_hex(body)))
    code, output = verify_cli()
    assert code == 1 and "record 3" in output


def test_a_deleted_record_is_named(db: Engine) -> None:
    fill(db, 5)
    with Session(db) as s, s.begin():
        s.execute(delete(AuditRecord).where(AuditRecord.seq == 3))
    code, output = verify_cli()
    assert code == 1 and "record 3" in output


def test_a_truncated_tail_is_detected(db: Engine) -> None:
    fill(db, 5)
    with Session(db) as s, s.begin():
        s.execute(delete(AuditRecord).where(AuditRecord.seq == 5))
    code, output = verify_cli()
    assert code == 1 and "head" in output


def test_a_changed_column_is_detected(db: Engine) -> None:
    fill(db, 3)
    with Session(db) as s, s.begin():
        s.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(principal="apikey:someone-else"))
    code, output = verify_cli()
    assert code == 1 and "record 2" in output


def test_export_writes_jsonl(db: Engine, tmp_path: Path) -> None:
    fill(db, 4)
    out = tmp_path / "audit.jsonl"
    result = runner.invoke(cli, ["audit", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4]
    assert all(audit.sha256_hex(audit.canonical_json({k: v for k, v in r.items() if k != "hash"})) == r["hash"]
               for r in lines)
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    result = runner.invoke(cli, ["audit", "export", "--since", tomorrow])
    assert result.exit_code == 0 and result.output == ""
    assert runner.invoke(cli, ["audit", "export", "--since", "yesterday-ish"]).exit_code == 2


def test_apikey_create_prints_the_key_alone_on_the_last_line(db: Engine) -> None:
    result = runner.invoke(cli, ["apikey", "create", "--name", "epic", "--role", "coder"])
    assert result.exit_code == 0, result.output
    key = result.output.rstrip("\n").splitlines()[-1]
    assert key.startswith("nc_") and " " not in key
    with Session(db) as s:
        principal = verify_api_key(s, key)
        assert principal is not None and principal.role == "coder" and principal.name == "epic"
        # Only a salted hash is stored.
        stored = s.execute(text("SELECT salt, secret_hash FROM api_key")).one()
        assert key.split("_", 2)[2] not in stored.secret_hash
    listed = runner.invoke(cli, ["apikey", "list"])
    assert "epic" in listed.output and key.split("_", 2)[2] not in listed.output
    key_id = key.split("_")[1]
    assert runner.invoke(cli, ["apikey", "revoke", key_id]).exit_code == 0
    with Session(db) as s:
        assert verify_api_key(s, key) is None
    assert runner.invoke(cli, ["apikey", "create", "--name", "x", "--role", "root"]).exit_code == 2


def test_user_create_reads_the_password_from_stdin(db: Engine) -> None:
    result = runner.invoke(cli, ["user", "create", "--username", "ann", "--role", "coder", "--password-stdin"],
                           input="correct horse battery\n")
    assert result.exit_code == 0, result.output
    with Session(db) as s:
        assert authenticate_user(s, "ann", "correct horse battery") is not None
        assert authenticate_user(s, "ann", "wrong password") is None
        stored = s.execute(text("SELECT password_hash FROM app_user")).scalar_one()
        assert stored.startswith("scrypt$") and "correct horse" not in stored
    again = runner.invoke(cli, ["user", "create", "--username", "ann", "--password-stdin"], input="another pass\n")
    assert again.exit_code == 2
    short = runner.invoke(cli, ["user", "create", "--username", "bob", "--password-stdin"], input="short\n")
    assert short.exit_code == 2
    prompted = runner.invoke(cli, ["user", "create", "--username", "cy", "--role", "admin"],
                             input="long enough pw\nlong enough pw\n")
    assert prompted.exit_code == 0


def test_notes_expire_and_purge(db: Engine) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    with write_session(db) as s:
        NoteStore("", retention_days=1).save(s, "old", "old note", now=past)
    with Session(db) as s:
        assert s.get(StoredNote, "old") is not None
        assert NoteStore("", retention_days=1).load(s, "old") is None  # expired: never returned, even unpurged
    result = runner.invoke(cli, ["notes", "purge"])
    assert result.exit_code == 0 and "purged 1" in result.output
    with Session(db) as s:
        assert s.get(StoredNote, "old") is None


def test_writing_a_note_purges_expired_ones(db: Engine) -> None:
    store = NoteStore("", retention_days=1)
    with write_session(db) as s:
        store.save(s, "old", "old note", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    with write_session(db) as s:
        store.save(s, "new", "new note")
    with Session(db) as s:
        assert [r.request_id for r in s.query(StoredNote)] == ["new"]
        assert store.load(s, "new") == "new note"
