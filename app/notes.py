"""Note text kept for the review UI, apart from the audit log.

Encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256) when NOTECODER_ENCRYPTION_KEY is set. Every
stored note expires `note_retention_days` after it was written and is never returned after that; writes
delete expired notes (at most once a minute per process, so concurrent writers rarely contend for the same
rows), and `notecoder notes purge` does the same on demand. Retention 0 keeps no note text at all.
"""

from __future__ import annotations

import datetime as dt

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import StoredNote, utcnow

PURGE_INTERVAL = dt.timedelta(minutes=1)


class NoteStoreError(Exception):
    code = "note_store_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoteStore:
    def __init__(self, encryption_key: str = "", retention_days: int = 90) -> None:
        self._fernet: Fernet | None = None
        if encryption_key:
            try:
                self._fernet = Fernet(encryption_key.encode())
            except ValueError as exc:
                raise NoteStoreError(
                    "NOTECODER_ENCRYPTION_KEY is not a Fernet key (32 url-safe base64-encoded bytes); "
                    "generate one with `python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'`"
                ) from exc
        self.retention_days = retention_days
        self._last_purge: dt.datetime | None = None

    @property
    def is_encrypted(self) -> bool:
        return self._fernet is not None

    @property
    def is_enabled(self) -> bool:
        return self.retention_days > 0

    def save(self, session: Session, request_id: str, text: str, now: dt.datetime | None = None) -> None:
        """Keep `text` until the retention period ends; may purge expired notes in the same transaction."""
        if not self.is_enabled:
            return
        now = now or utcnow()
        if self._last_purge is None or now - self._last_purge > PURGE_INTERVAL:
            self._last_purge = now
            self.purge(session, now)
        raw = text.encode("utf-8")
        content = self._fernet.encrypt(raw) if self._fernet else raw
        session.add(StoredNote(request_id=request_id, created_at=now, is_encrypted=self._fernet is not None,
                               expires_at=now + dt.timedelta(days=self.retention_days), content=content))

    def load(self, session: Session, request_id: str, now: dt.datetime | None = None) -> str | None:
        """The note of a request, or None when none was kept or it has expired."""
        row = session.get(StoredNote, request_id)
        if row is None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=dt.UTC)
        if expires <= (now or utcnow()):
            return None
        if not row.is_encrypted:
            return row.content.decode("utf-8")
        if self._fernet is None:
            raise NoteStoreError("this note was stored encrypted; set NOTECODER_ENCRYPTION_KEY to read it")
        try:
            return self._fernet.decrypt(row.content).decode("utf-8")
        except InvalidToken as exc:
            raise NoteStoreError("this note was encrypted with another key") from exc

    def purge(self, session: Session, now: dt.datetime | None = None) -> int:
        """Delete expired notes; returns how many."""
        result = session.execute(delete(StoredNote).where(StoredNote.expires_at <= (now or utcnow())))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def count(self, session: Session) -> int:
        return len(session.scalars(select(StoredNote.request_id)).all())
