"""ICD-10-CM Alphabetic Index, flattened CSV (RowID, Letter, Level, Term, See, SeeAlso, NonEssModif, Code).

Each row with a code becomes an index term of that code whose text is the row's path of terms,
main term first ("Diabetes, diabetic (mellitus) (sugar) > type 2 > with > neuropathy"), so that the
pipeline can build clinician-style phrases from it.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from codebooks.errors import CodeSetNotLoaded, ImportFormatError
from codebooks.loaders.common import LoadReport, Progress, bulk_insert
from codebooks.loaders.tabular_files import read_text
from codebooks.models import CodeSetVersion, Term

COLUMNS = ["RowID", "Letter", "Level", "Term", "See", "SeeAlso", "NonEssModif", "Code"]
PATH_SEPARATOR = " > "


def parse_index_csv(path: Path) -> list[dict[str, str]]:
    """Rows {code, text, modifiers} for every index entry that names a code."""
    reader = csv.DictReader(io.StringIO(read_text(path)))
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != COLUMNS:
        raise ImportFormatError(f"{path.name}: expected the flattened index CSV with columns {', '.join(COLUMNS)}")
    stack: list[str] = []
    out: list[dict[str, str]] = []
    for line_no, row in enumerate(reader, start=2):
        try:
            level = int(row["Level"])
        except (TypeError, ValueError) as exc:
            raise ImportFormatError(f"{path.name} line {line_no}: Level {row['Level']!r} is not a number") from exc
        del stack[level:]
        stack.append(row["Term"].strip())
        code = (row["Code"] or "").strip().rstrip("-").rstrip(".").upper()
        if code:
            out.append({"code": code, "text": PATH_SEPARATOR.join(stack), "modifiers": (row["NonEssModif"] or "")})
    return out


def import_index(
    session: Session,
    path: Path,
    *,
    version: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> LoadReport:
    """Attach the index terms to an ICD-10-CM version (the latest loaded one by default); idempotent."""
    t0 = time.perf_counter()
    query = select(CodeSetVersion).where(CodeSetVersion.system_name == "icd10cm", CodeSetVersion.is_complete)
    if version:
        query = query.where(CodeSetVersion.version == version)
    target = session.scalars(query.order_by(CodeSetVersion.effective_from.desc())).first()
    if target is None:
        raise CodeSetNotLoaded("load ICD-10-CM first (notecoder codebook load) and then import its index")
    existing = session.scalar(select(Term.id).where(Term.version_id == target.id, Term.source == "index").limit(1))
    if existing is not None and not force:
        return LoadReport("icd10cm", target.version, 0, 0, 0, 0, True, time.perf_counter() - t0)
    if existing is not None:
        session.query(Term).filter(Term.version_id == target.id, Term.source == "index").delete()
    rows = parse_index_csv(path)
    terms: list[dict[str, Any]] = [
        {"version_id": target.id, "code": r["code"], "text": r["text"], "source": "index"} for r in rows
    ]
    bulk_insert(session, Term, terms, progress)
    session.flush()
    return LoadReport("icd10cm", target.version, 0, len(terms), 0, 0, False, time.perf_counter() - t0)
