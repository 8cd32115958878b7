"""Append-only, hash-chained audit log: one record per suggest request and per review decision.

Each record's `body` is canonical JSON (sorted keys, no spaces, UTF-8) holding its `seq`, the previous
record's hash (`prev_hash`) and the facts of the event; `hash` = SHA-256 of `body`. The note itself never
enters the log: only its SHA-256 and length.

Appends serialize on the single `audit_head` row (`SELECT ... FOR UPDATE` on PostgreSQL, a transaction
started with BEGIN IMMEDIATE on SQLite, see `app.services.storage.write_session`), so several workers can
neither lose a record nor fork the chain. Call `append` inside the transaction that does the audited work:
the record commits with it or not at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AuditHead, AuditRecord, utcnow

GENESIS_HASH = "0" * 64
HEAD_ID = 1


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def append(session: Session, *, kind: str, request_id: str, principal: str, data: dict[str, Any],
           now: dt.datetime | None = None) -> AuditRecord:
    """Append one record after the current head, in the caller's transaction."""
    head = session.scalar(select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update())
    if head is None:
        # The migration inserts the head row; a missing one means the table was tampered with.
        raise RuntimeError("audit_head row is missing; run the app migrations")
    created = now or utcnow()
    seq = head.seq + 1
    body = canonical_json({
        **data,
        "seq": seq,
        "kind": kind,
        "request_id": request_id,
        "time": created.isoformat(),
        "principal": principal,
        "prev_hash": head.hash,
    })
    digest = sha256_hex(body)
    record = AuditRecord(seq=seq, kind=kind, request_id=request_id, created_at=created, principal=principal,
                         body=body, prev_hash=head.hash, hash=digest)
    session.add(record)
    head.seq = seq
    head.hash = digest
    session.flush()
    return record


@dataclass(frozen=True)
class VerifyResult:
    count: int
    broken_seq: int | None = None
    broken_request_id: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_seq is None and not self.reason


def _records(session: Session, batch: int = 1000) -> Iterator[AuditRecord]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditRecord).where(AuditRecord.seq > last).order_by(AuditRecord.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def verify(session: Session) -> VerifyResult:
    """Walk the chain from the first record; report the first record that does not fit."""
    expected_prev = GENESIS_HASH
    count = 0
    for row in _records(session):
        count += 1

        def broken(reason: str, row: AuditRecord = row, good: int = count - 1) -> VerifyResult:
            return VerifyResult(good, row.seq, row.request_id, reason)

        if row.seq != count:
            # Either a record was deleted before this one or sequence numbers were rewritten.
            return VerifyResult(count - 1, count, None, f"record {count} is missing (next is {row.seq})")
        if sha256_hex(row.body) != row.hash:
            return broken("its body does not match its hash")
        try:
            body = json.loads(row.body)
        except json.JSONDecodeError:
            return broken("its body is not JSON")
        if canonical_json(body) != row.body:
            return broken("its body is not canonical JSON")
        if body.get("prev_hash") != expected_prev or row.prev_hash != expected_prev:
            return broken("it does not point to the previous record's hash")
        for field in ("seq", "kind", "request_id", "principal"):
            if body.get(field) != getattr(row, field):
                return broken(f"column {field} differs from the hashed body")
        expected_prev = row.hash
    head = session.get(AuditHead, HEAD_ID)
    if head is None:
        return VerifyResult(count, None, None, "the audit_head row is missing")
    if head.seq != count or head.hash != expected_prev:
        # Records at the end were removed (or the head was moved): the chain is shorter than it was.
        return VerifyResult(count, count + 1 if head.seq > count else None, None,
                            f"the head says {head.seq} records ending in {head.hash[:12]}, the table has {count}")
    return VerifyResult(count)


def export(session: Session, since: dt.datetime | None = None) -> Iterator[dict[str, Any]]:
    """Records as dicts (the hashed body plus `hash`), oldest first, optionally from `since` on."""
    for row in _records(session):
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.UTC)
        if since is not None and created < since:
            continue
        yield {**json.loads(row.body), "hash": row.hash}


def record_count(session: Session) -> int:
    head = session.get(AuditHead, HEAD_ID)
    return head.seq if head else 0
