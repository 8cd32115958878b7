"""CPT: the curated list shipped with notecoder (our own wording) and the importer for a licensed AMA file.

CPT descriptors are copyrighted by the American Medical Association. notecoder ships only code
numbers with descriptions written by the project; a site that licenses CPT imports its file with
`notecoder codebook import-cpt FILE`, and the licensed wording then replaces ours in responses.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from codebooks.errors import ImportFormatError
from codebooks.loaders.common import LoadReport, Progress, bulk_insert, start_version
from codebooks.loaders.tabular_files import pick_column, read_text, sniff_rows
from codebooks.models import Code

SYSTEM = "cpt"
CURATED_VERSION = "notecoder-2026"
CURATED_FROM = dt.date(2026, 1, 1)
CURATED_TO = dt.date(2026, 12, 31)
CPT_CODE = re.compile(r"^\d{4}[0-9A-Z]$")

CODE_COLUMNS = ("code", "cpt", "cpt_code", "hcpcs", "hcpcs_code", "procedure_code")
LONG_COLUMNS = ("long_description", "long_descriptor", "descriptor", "description", "long", "full_descriptor")
SHORT_COLUMNS = ("short_description", "short_descriptor", "short", "abbreviated_descriptor")
CATEGORY_COLUMNS = ("category", "section")


def curated_path() -> Path:
    return Path(str(resources.files("codebooks") / "data" / "cpt_curated.csv"))


def parse_cpt_file(path: Path) -> list[dict[str, str]]:
    """Rows {code, short, long, category} of a CSV/TSV with code and descriptor columns.

    A header row names the columns (code/cpt_code, descriptor/long_description, optional
    short_description, category). A file without a header must be two columns: code, descriptor.
    """
    rows = list(sniff_rows(read_text(path)))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise ImportFormatError(f"{path.name}: the file is empty")
    header = rows[0]
    if CPT_CODE.match(header[0].strip()):
        code_i, long_i, short_i, cat_i = 0, 1, None, None
        body = rows
    else:
        code_i = pick_column(header, CODE_COLUMNS)
        long_i = pick_column(header, LONG_COLUMNS)
        short_i = pick_column(header, SHORT_COLUMNS)
        cat_i = pick_column(header, CATEGORY_COLUMNS)
        if code_i is None or (long_i is None and short_i is None):
            raise ImportFormatError(
                f"{path.name}: no code column ({', '.join(CODE_COLUMNS)}) or no descriptor column "
                f"({', '.join(LONG_COLUMNS)}) in the header"
            )
        body = rows[1:]
    out: dict[str, dict[str, str]] = {}
    for line_no, row in enumerate(body, start=2 if body is not rows else 1):
        code = row[code_i].strip().upper() if code_i < len(row) else ""
        if not CPT_CODE.match(code):
            raise ImportFormatError(f"{path.name} line {line_no}: {code!r} is not a five-character CPT code")
        long = row[long_i].strip() if long_i is not None and long_i < len(row) else ""
        short = row[short_i].strip() if short_i is not None and short_i < len(row) else ""
        if not (long or short):
            raise ImportFormatError(f"{path.name} line {line_no}: code {code} has no descriptor")
        category = row[cat_i].strip() if cat_i is not None and cat_i < len(row) else ""
        out[code] = {"code": code, "short": short or long[:60], "long": long or short, "category": category}
    return list(out.values())


def _load(
    session: Session,
    rows: list[dict[str, str]],
    *,
    version: str,
    effective_from: dt.date,
    effective_to: dt.date | None,
    source: str,
    is_licensed: bool,
    force: bool,
    progress: Progress | None,
) -> LoadReport:
    t0 = time.perf_counter()
    row = start_version(
        session,
        system=SYSTEM,
        version=version,
        effective_from=effective_from,
        effective_to=effective_to,
        source=source,
        is_licensed=is_licensed,
        force=force,
    )
    if row is None:
        return LoadReport(SYSTEM, version, 0, 0, 0, 0, True, time.perf_counter() - t0)
    codes: list[dict[str, Any]] = [
        {
            "version_id": row.id,
            "code": r["code"],
            "short_description": r["short"],
            "long_description": r["long"],
            "parent_code": None,
            "is_billable": True,
            "kind": "code",
            "chapter": None,
            "block": None,
            "category": r["category"] or None,
        }
        for r in rows
    ]
    bulk_insert(session, Code, codes, progress)
    row.code_count = len(codes)
    row.is_complete = True
    session.flush()
    return LoadReport(SYSTEM, version, len(codes), 0, 0, 0, False, time.perf_counter() - t0)


def load_curated_cpt(session: Session, *, force: bool = False, progress: Progress | None = None) -> LoadReport:
    """Load the project's curated CPT list (code numbers with notecoder's own wording)."""
    return _load(
        session,
        parse_cpt_file(curated_path()),
        version=CURATED_VERSION,
        effective_from=CURATED_FROM,
        effective_to=CURATED_TO,
        source="notecoder curated list (project wording; not AMA descriptors)",
        is_licensed=False,
        force=force,
        progress=progress,
    )


def import_licensed_cpt(
    session: Session,
    path: Path,
    *,
    version: str | None = None,
    effective_from: dt.date | None = None,
    effective_to: dt.date | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> LoadReport:
    """Import a licensed CPT file; its descriptors replace the curated wording from then on."""
    rows = parse_cpt_file(path)
    start = effective_from or dt.date(dt.date.today().year, 1, 1)
    return _load(
        session,
        rows,
        version=version or f"licensed-{start.year}",
        effective_from=start,
        effective_to=effective_to or dt.date(start.year, 12, 31),
        source=f"licensed file {path.name}",
        is_licensed=True,
        force=force,
        progress=progress,
    )
