"""The versioned rule and vocabulary files in nlp/resources, loaded once and hashed into `rules_version`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlp.errors import ResourceError

RESOURCE_DIR = Path(__file__).resolve().parent / "resources"
RESOURCE_FILES = (
    "abbreviations.csv",
    "synonyms.csv",
    "medications.csv",
    "history_codes.csv",
    "patterns.json",
    "sections.json",
    "context_rules.json",
    "rules.json",
)


@dataclass(frozen=True)
class Resources:
    """Parsed resource files plus their combined hash (`version`)."""

    directory: Path
    version: str
    abbreviations: list[dict[str, str]]
    synonyms: list[dict[str, str]]
    medications: list[dict[str, str]]
    history_codes: list[dict[str, str]]
    patterns: list[dict[str, Any]]
    sections: list[dict[str, Any]]
    rules: dict[str, Any]
    context_rules_path: Path
    extra: dict[str, Any] = field(default_factory=dict)


def _csv(data: bytes, name: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ResourceError(f"{name} lacks column(s) {', '.join(missing)}")
    return [{k: (v or "").strip() for k, v in row.items()} for row in reader]


def _json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise ResourceError(f"{name} is not valid JSON: {exc}") from exc


def load_resources(directory: Path | None = None) -> Resources:
    """Read every resource file from `directory` (the packaged folder by default)."""
    directory = directory or RESOURCE_DIR
    raw: dict[str, bytes] = {}
    digest = hashlib.sha256()
    for name in RESOURCE_FILES:
        path = directory / name
        if not path.exists():
            raise ResourceError(f"resource file {path} is missing; reinstall notecoder or restore it")
        raw[name] = path.read_bytes()
        digest.update(name.encode())
        digest.update(raw[name])
    return Resources(
        directory=directory,
        version=f"rules-{digest.hexdigest()[:12]}",
        abbreviations=_csv(raw["abbreviations.csv"], "abbreviations.csv", ("abbreviation", "expansion")),
        synonyms=_csv(raw["synonyms.csv"], "synonyms.csv", ("phrase", "code")),
        medications=_csv(raw["medications.csv"], "medications.csv", ("drug", "code")),
        history_codes=_csv(
            raw["history_codes.csv"], "history_codes.csv", ("prefix", "personal_history", "family_history")
        ),
        patterns=_json(raw["patterns.json"], "patterns.json")["patterns"],
        sections=_json(raw["sections.json"], "sections.json")["sections"],
        rules=_json(raw["rules.json"], "rules.json"),
        context_rules_path=directory / "context_rules.json",
    )
