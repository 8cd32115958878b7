"""Medicare Code Editor list edits (age, sex, newborn/maternity, unacceptable principal diagnosis...)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from codebooks.errors import ImportFormatError
from codebooks.loaders.common import LoadReport, Progress, add_dot, bulk_insert, start_version
from codebooks.loaders.tabular_files import read_text
from codebooks.models import Edit

SYSTEM = "mce"
COLUMNS = ("MCE_Version", "ICD_Version", "MCE_Section", "MCE_Subsection", "MCE_Edit_Type", "ICD_Code_Type",
           "ICD_Code", "ICD_Desc")
# MCE version N applies to fiscal year 1983 + N (v37 -> FY2020, 2019-10-01 .. 2020-09-30).
FISCAL_YEAR_OFFSET = 1983


def parse_mce(path: Path) -> tuple[str, list[dict[str, str]]]:
    lines = read_text(path).splitlines()
    if not lines or tuple(c.strip() for c in lines[0].split("\t")) != COLUMNS:
        raise ImportFormatError(f"{path.name}: expected a tab-separated MCE list with header {', '.join(COLUMNS)}")
    rows: list[dict[str, str]] = []
    versions: set[str] = set()
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < 8:
            raise ImportFormatError(f"{path.name} line {line_no}: {len(cells)} columns, expected 8")
        version, _icd, section, subsection, edit_type, code_type, code, desc = (c.strip() for c in cells[:8])
        versions.add(version)
        rows.append({
            "code": add_dot(code) if code_type == "D" else code.upper(),
            "code_type": code_type,
            "edit_type": edit_type,
            "section": f"{section}{subsection}",
            "description": desc,
        })
    if len(versions) != 1:
        raise ImportFormatError(f"{path.name}: expected one MCE version, found {sorted(versions)}")
    return versions.pop(), rows


def import_mce(
    session: Session, path: Path, *, force: bool = False, progress: Progress | None = None
) -> LoadReport:
    t0 = time.perf_counter()
    version, rows = parse_mce(path)
    fiscal_year = FISCAL_YEAR_OFFSET + int(version) if version.isdigit() else dt.date.today().year
    label = f"v{version}"
    row = start_version(
        session,
        system=SYSTEM,
        version=label,
        effective_from=dt.date(fiscal_year - 1, 10, 1),
        effective_to=dt.date(fiscal_year, 9, 30),
        source=f"CMS MCE list {path.name}",
        force=force,
    )
    if row is None:
        return LoadReport(SYSTEM, label, 0, 0, 0, 0, True, time.perf_counter() - t0)
    edits: list[dict[str, Any]] = [{"version_id": row.id, **r} for r in rows]
    bulk_insert(session, Edit, edits, progress)
    row.code_count = len(edits)
    row.is_complete = True
    session.flush()
    return LoadReport(SYSTEM, label, 0, 0, 0, len(edits), False, time.perf_counter() - t0)
