"""Shared steps of every loader: systems, versions, idempotent replacement, bulk inserts."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from codebooks.models import Code, CodeSetVersion, CodeSystem, Edit, Instruction, Term

Progress = Callable[[int, int], None]
"""Called with (done, total) while a loader runs; the CLI draws a progress bar from it."""

SYSTEMS: dict[str, tuple[str, str]] = {
    "icd10cm": ("ICD-10-CM", "http://hl7.org/fhir/sid/icd-10-cm"),
    "cpt": ("CPT", "http://www.ama-assn.org/go/cpt"),
    "hcpcs": ("HCPCS Level II", "urn:oid:2.16.840.1.113883.6.285"),
    "mce": ("Medicare Code Editor edits", "urn:notecoder:mce"),
}

CODE_REF = re.compile(r"\b([A-Z][0-9][0-9A-Z](?:\.[0-9A-Z-]{1,4})?(?:-[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z-]{1,4})?)?)")

BATCH = 5000
T = TypeVar("T")


@dataclass(frozen=True)
class LoadReport:
    system: str
    version: str
    codes: int
    terms: int
    instructions: int
    edits: int
    skipped: bool
    seconds: float


def ensure_system(session: Session, name: str) -> CodeSystem:
    system = session.get(CodeSystem, name)
    if system is None:
        title, uri = SYSTEMS[name]
        system = CodeSystem(name=name, title=title, uri=uri)
        session.add(system)
        session.flush()
    return system


def find_version(session: Session, system: str, version: str) -> CodeSetVersion | None:
    return session.scalar(
        select(CodeSetVersion).where(CodeSetVersion.system_name == system, CodeSetVersion.version == version)
    )


def start_version(
    session: Session,
    *,
    system: str,
    version: str,
    effective_from: dt.date,
    effective_to: dt.date | None,
    source: str,
    is_licensed: bool = False,
    force: bool = False,
) -> CodeSetVersion | None:
    """Create the version row, or return None when a complete copy is already loaded.

    An incomplete copy (an interrupted load) or `force` deletes the old rows first, so a load is
    idempotent per version and never leaves half a code set behind.
    """
    ensure_system(session, system)
    existing = find_version(session, system, version)
    if existing is not None:
        if existing.is_complete and not force:
            return None
        for model in (Code, Term, Instruction, Edit):
            session.execute(delete(model).where(model.version_id == existing.id))  # type: ignore[attr-defined]
        session.delete(existing)
        session.flush()
    row = CodeSetVersion(
        system_name=system,
        version=version,
        effective_from=effective_from,
        effective_to=effective_to,
        source=source,
        is_licensed=is_licensed,
        is_complete=False,
    )
    session.add(row)
    session.flush()
    return row


def chunks(items: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def bulk_insert(
    session: Session,
    model: type[Any],
    rows: Sequence[dict[str, Any]],
    progress: Progress | None = None,
    done_before: int = 0,
    total: int = 0,
) -> int:
    done = done_before
    for batch in chunks(rows):
        session.execute(insert(model), batch)
        done += len(batch)
        if progress is not None:
            progress(done, total or len(rows))
    return len(rows)


def code_refs(text: str) -> str:
    """Codes and ranges a tabular note names, space-separated ("E08.- E09.-")."""
    return " ".join(dict.fromkeys(m.group(1) for m in CODE_REF.finditer(text)))


def add_dot(code: str) -> str:
    """`E1140` -> `E11.40`: CMS files carry ICD-10-CM codes without the dot."""
    code = code.strip().upper()
    return code if len(code) <= 3 or "." in code else f"{code[:3]}.{code[3:]}"
