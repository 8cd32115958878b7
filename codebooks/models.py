"""Code-set database: systems, versions by effective date, codes, terms, tabular instructions, edits."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class CodeSystem(Base):
    __tablename__ = "code_system"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    uri: Mapped[str] = mapped_column(String(200))

    versions: Mapped[list[CodeSetVersion]] = relationship(back_populates="system")


class CodeSetVersion(Base):
    __tablename__ = "code_set_version"
    __table_args__ = (UniqueConstraint("system_name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    system_name: Mapped[str] = mapped_column(ForeignKey("code_system.name"))
    version: Mapped[str] = mapped_column(String(64))
    effective_from: Mapped[dt.date] = mapped_column(Date)
    effective_to: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    source: Mapped[str] = mapped_column(String(300))
    # A licensed import replaces curated wording of the same system without deleting it.
    is_licensed: Mapped[bool] = mapped_column(Boolean, default=False)
    is_complete: Mapped[bool] = mapped_column(Boolean, default=False)
    code_count: Mapped[int] = mapped_column(Integer, default=0)
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    system: Mapped[CodeSystem] = relationship(back_populates="versions")


class Code(Base):
    __tablename__ = "code"
    __table_args__ = (
        UniqueConstraint("version_id", "code"),
        Index("ix_code_code", "code"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("code_set_version.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(16))
    short_description: Mapped[str] = mapped_column(Text)
    long_description: Mapped[str] = mapped_column(Text)
    parent_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    is_billable: Mapped[bool] = mapped_column(Boolean)
    kind: Mapped[str] = mapped_column(String(16))  # chapter, block, category, subcategory, code
    chapter: Mapped[str | None] = mapped_column(String(16), nullable=True)
    block: Mapped[str | None] = mapped_column(String(16), nullable=True)
    category: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Term(Base):
    """A phrase naming a code: inclusion term, includes note, index term, synonym, abbreviation."""

    __tablename__ = "term"
    __table_args__ = (Index("ix_term_version_code", "version_id", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("code_set_version.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))


class Instruction(Base):
    """Tabular instruction attached to a code: excludes1/2, code first, use additional, code also,
    seven-character definitions and notes, includes."""

    __tablename__ = "instruction"
    __table_args__ = (Index("ix_instruction_version_code", "version_id", "code", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("code_set_version.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    # Codes or ranges the note points to, space-separated ("E08.- E09.-"); '' when it names none.
    targets: Mapped[str] = mapped_column(Text, default="")


class Edit(Base):
    """A claim edit from a Medicare Code Editor list (age, sex, principal-diagnosis, manifestation...)."""

    __tablename__ = "edit"
    __table_args__ = (Index("ix_edit_version_code", "version_id", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("code_set_version.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(16))
    code_type: Mapped[str] = mapped_column(String(1))  # D diagnosis, P procedure
    edit_type: Mapped[str] = mapped_column(String(64))
    section: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(Text, default="")
