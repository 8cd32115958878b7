"""ICD-10-CM tabular from the PyPI package `simple-icd-10-cm` (FY2026, April 1 2026 update)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy.orm import Session

from codebooks.loaders.common import LoadReport, Progress, bulk_insert, code_refs, start_version
from codebooks.models import Code, Instruction, Term

SYSTEM = "icd10cm"
# simple-icd-10-cm 1.5.0 ships the April 1, 2026 tabular: FY2026, in force until FY2027 starts.
DEFAULT_VERSION = "FY2026-04"
DEFAULT_EFFECTIVE_FROM = dt.date(2026, 4, 1)
DEFAULT_EFFECTIVE_TO = dt.date(2026, 9, 30)

# Tabular notes whose getter returns one newline-separated string rather than a list.
_TEXT_NOTES = {
    "code_first": "get_code_first", "use_additional": "get_use_additional_code", "code_also": "get_code_also"
}
_LIST_NOTES = {"excludes1": "get_excludes1", "excludes2": "get_excludes2", "notes": "get_notes"}


def _kind(cm: Any, code: str) -> str:
    if cm.is_chapter(code):
        return "chapter"
    # A few names ("B10") are both a one-category block and the category: the category is what codes use.
    if cm.is_category(code):
        return "category"
    if cm.is_block(code):
        return "block"
    if cm.is_extended_subcategory(code):
        return "extension"
    return "subcategory"


def _note_lines(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        # The header line ("any associated:") qualifies the lines under it; keep it on each.
        lines = [ln.strip() for ln in value.splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].endswith(":") and not code_refs(lines[0]):
            return [f"{lines[0]} {ln}" for ln in lines[1:]]
        return lines
    return [str(v).strip() for v in value if str(v).strip()]


def load_icd10cm(
    session: Session,
    *,
    version: str = DEFAULT_VERSION,
    effective_from: dt.date = DEFAULT_EFFECTIVE_FROM,
    effective_to: dt.date | None = DEFAULT_EFFECTIVE_TO,
    force: bool = False,
    progress: Progress | None = None,
) -> LoadReport:
    """Load every chapter, block, category and code of the packaged tabular, with its terms and notes.

    Idempotent: a complete load of the same version is left alone unless `force` is set.
    """
    t0 = time.perf_counter()
    import simple_icd_10_cm as cm  # 3 s to parse its XML: only when a load is asked for

    row = start_version(
        session,
        system=SYSTEM,
        version=version,
        effective_from=effective_from,
        effective_to=effective_to,
        source=f"simple-icd-10-cm {_package_version()} (CDC/NCHS tabular, April 1 2026)",
        force=force,
    )
    if row is None:
        return LoadReport(SYSTEM, version, 0, 0, 0, 0, True, time.perf_counter() - t0)

    codes: list[dict[str, Any]] = []
    terms: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    vid = row.id
    all_codes = list(dict.fromkeys(cm.get_all_codes(True)))
    for code in all_codes:
        kind = _kind(cm, code)
        description = cm.get_description(code)
        ancestors = cm.get_ancestors(code)
        chapter = ancestors[-1] if ancestors else (code if kind == "chapter" else None)
        block = next((a for a in ancestors if cm.is_block(a) and not cm.is_category(a)), None)
        if kind == "block":
            block = code
        category = next((a for a in [code, *ancestors] if cm.is_category(a)), None)
        codes.append(
            {
                "version_id": vid,
                "code": code,
                "short_description": description,
                "long_description": description,
                "parent_code": cm.get_parent(code) or None,
                "is_billable": kind not in ("chapter", "block") and cm.is_leaf(code),
                "kind": kind,
                "chapter": chapter,
                "block": block,
                "category": category,
            }
        )
        for text in cm.get_inclusion_term(code):
            terms.append({"version_id": vid, "code": code, "text": text, "source": "inclusion"})
        for text in cm.get_includes(code):
            terms.append({"version_id": vid, "code": code, "text": text, "source": "includes"})
        for kind_name, getter in (_LIST_NOTES | _TEXT_NOTES).items():
            for text in _note_lines(getattr(cm, getter)(code)):
                notes.append(
                    {"version_id": vid, "code": code, "kind": kind_name, "text": text, "targets": code_refs(text)}
                )
        for char, meaning in (cm.get_seven_chr_def(code) or {}).items():
            notes.append(
                {"version_id": vid, "code": code, "kind": "seven_chr_def", "text": meaning, "targets": char}
            )
        seven_note = cm.get_seven_chr_note(code)
        if seven_note:
            notes.append({"version_id": vid, "code": code, "kind": "seven_chr_note", "text": seven_note, "targets": ""})

    total = len(codes) + len(terms) + len(notes)
    done = bulk_insert(session, Code, codes, progress, 0, total)
    done += bulk_insert(session, Term, terms, progress, done, total)
    done += bulk_insert(session, Instruction, notes, progress, done, total)
    row.code_count = len(codes)
    row.is_complete = True
    session.flush()
    return LoadReport(SYSTEM, version, len(codes), len(terms), len(notes), 0, False, time.perf_counter() - t0)


def _package_version() -> str:
    from importlib.metadata import version

    return version("simple-icd-10-cm")
