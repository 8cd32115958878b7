"""Reading the delimited files users bring (licensed CPT exports, curated lists): delimiter and header sniffing."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

from codebooks.errors import ImportFormatError


def read_text(path: Path) -> str:
    """Decode a vendor file: UTF-8 (with or without BOM), falling back to Latin-1 as CMS/AMA files often are."""
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file; give the path of the downloaded file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def sniff_rows(text: str) -> Iterator[list[str]]:
    """Rows of a CSV, TSV or pipe-separated file, whichever its first line uses."""
    first = text.split("\n", 1)[0]
    delimiter = max(("\t", ",", "|"), key=first.count)
    if first.count(delimiter) == 0:
        raise ImportFormatError("expected a CSV, TSV or pipe-separated file with a code and a description column")
    yield from csv.reader(io.StringIO(text), delimiter=delimiter)


def pick_column(header: Sequence[str], names: Sequence[str]) -> int | None:
    lowered = [h.strip().lower().replace(" ", "_") for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None
