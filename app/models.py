"""The service's own tables: API keys, users, suggestion runs and reviews, stored notes, the audit chain.

They live next to the code-set tables in the same database but have their own metadata and their own
Alembic environment (`app/migrations`, version table `alembic_version_app`), so the code-set layer never
learns about them.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class AppBase(DeclarativeBase):
    pass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ApiKey(AppBase):
    """An API key: the public `key_id` finds the row, the secret is kept only as a salted hash."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class User(AppBase):
    """A login for the coder UI; the password is kept as an scrypt hash string."""

    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(300))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SuggestionRun(AppBase):
    """One answered suggest request: what was suggested, and where its review stands."""

    __tablename__ = "suggestion_run"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    principal: Mapped[str] = mapped_column(String(200))
    note_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    note_sha256: Mapped[str] = mapped_column(String(64))
    note_chars: Mapped[int] = mapped_column(Integer)
    setting: Mapped[str] = mapped_column(String(16))
    date_of_service: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    # The SuggestResponse as canonical JSON: the review UI and review checks read it back.
    response_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | final
    revision: Mapped[int] = mapped_column(Integer, default=0)


class Review(AppBase):
    """One review decision set on a suggestion run; revisions count up from 1."""

    __tablename__ = "review"
    __table_args__ = (Index("ix_review_run_revision", "request_id", "revision", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("suggestion_run.request_id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    principal: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    is_final: Mapped[bool] = mapped_column(Boolean, default=False)
    # Digest of principal + decisions + final: a retried identical submission is recognised, not re-applied.
    digest: Mapped[str] = mapped_column(String(64))
    body_json: Mapped[str] = mapped_column(Text)


class StoredNote(AppBase):
    """Note text kept for the review UI, apart from the audit log; Fernet-encrypted when a key is set."""

    __tablename__ = "stored_note"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    is_encrypted: Mapped[bool] = mapped_column(Boolean)
    content: Mapped[bytes] = mapped_column(LargeBinary)


class AuditRecord(AppBase):
    """One link of the hash chain. `body` is the canonical JSON that `hash` covers; it includes `seq`
    and `prev_hash`, so reordering, deleting or editing a record breaks the chain."""

    __tablename__ = "audit_record"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    principal: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(AppBase):
    """A single row holding the chain's last seq and hash; writers lock it to append one at a time."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
