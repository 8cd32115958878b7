"""HCPCS Level II from the CMS alpha-numeric file (fixed-width ANWEB layout)."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from codebooks.errors import ImportFormatError
from codebooks.loaders.common import LoadReport, Progress, bulk_insert, start_version
from codebooks.loaders.tabular_files import read_text
from codebooks.models import Code

SYSTEM = "hcpcs"
# Record identification codes: 3/4 procedure first/continuation line, 7/8 modifier first/continuation.
FIRST_LINE = {"3": "code", "7": "modifier"}
CONTINUATION = {"4", "8"}
HCPCS_CODE = re.compile(r"^[A-V]\d{4}$")
MODIFIER = re.compile(r"^[0-9A-Z]{2}$")
YEAR_IN_NAME = re.compile(r"(20\d\d)")


def parse_anweb(path: Path) -> list[dict[str, str]]:
    """Records {code, kind, short, long} of an ANWEB file; long descriptions spread over continuation lines."""
    records: dict[str, dict[str, str]] = {}
    for line in read_text(path).splitlines():
        if len(line) < 12:
            continue
        code, ric = line[0:5].strip(), line[10]
        if ric in FIRST_LINE:
            pattern = HCPCS_CODE if ric == "3" else MODIFIER
            if not pattern.match(code):
                continue
            records[code] = {
                "code": code,
                "kind": FIRST_LINE[ric],
                "long": line[11:91].strip(),
                "short": line[91:119].strip(),
            }
        elif ric in CONTINUATION and code in records:
            records[code]["long"] = f"{records[code]['long']} {line[11:91].strip()}".strip()
    if not records:
        raise ImportFormatError(f"{path.name}: no HCPCS records found; expected the fixed-width ANWEB file from CMS")
    return list(records.values())


def import_hcpcs(
    session: Session,
    path: Path,
    *,
    version: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> LoadReport:
    """Import a yearly HCPCS Level II file; the version defaults to the year in the file name."""
    t0 = time.perf_counter()
    records = parse_anweb(path)
    year_match = YEAR_IN_NAME.search(path.name)
    year = int(year_match.group(1)) if year_match else dt.date.today().year
    label = version or str(year)
    row = start_version(
        session,
        system=SYSTEM,
        version=label,
        effective_from=dt.date(year, 1, 1),
        effective_to=dt.date(year, 12, 31),
        source=f"CMS HCPCS file {path.name}",
        force=force,
    )
    if row is None:
        return LoadReport(SYSTEM, label, 0, 0, 0, 0, True, time.perf_counter() - t0)
    codes: list[dict[str, Any]] = [
        {
            "version_id": row.id,
            "code": r["code"],
            "short_description": r["short"] or r["long"][:28],
            "long_description": r["long"],
            "parent_code": r["code"][0] if r["kind"] == "code" else None,
            "is_billable": r["kind"] == "code",
            "kind": r["kind"],
            "chapter": None,
            "block": None,
            "category": r["code"][0] if r["kind"] == "code" else "modifier",
        }
        for r in records
    ]
    bulk_insert(session, Code, codes, progress)
    row.code_count = len(codes)
    row.is_complete = True
    session.flush()
    return LoadReport(SYSTEM, label, len(codes), 0, 0, 0, False, time.perf_counter() - t0)
