"""Plain data passed between pipeline stages, and the Protocols the pipeline depends on.

`nlp` never imports `codebooks` or `app`: code-set access goes through `CandidateSource`,
which `codebooks.repository` implements.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Setting = Literal["outpatient", "inpatient", "emergency"]
SETTINGS: tuple[str, ...] = ("outpatient", "inpatient", "emergency")
CODE_SYSTEMS: tuple[str, ...] = ("icd10cm", "cpt")
Assertion = Literal["present", "negated", "family", "historical", "hypothetical", "uncertain"]


SEX_ALIASES: Mapping[str, str] = {"f": "female", "m": "male", "o": "other", "u": "unknown"}


def normalise_sex(value: object) -> object:
    """"F"/"m"/" Female " -> "female"; anything not a string is returned as it is (for the caller to reject)."""
    if not isinstance(value, str):
        return value
    v = value.strip().lower()
    return SEX_ALIASES.get(v, v)


@dataclass(frozen=True)
class Patient:
    age: int | None = None
    sex: Literal["female", "male", "other", "unknown"] | None = None


@dataclass(frozen=True)
class CodingRequest:
    """One note and the encounter facts that coding rules depend on."""

    text: str
    setting: str = "outpatient"
    date_of_service: dt.date | None = None
    patient: Patient = field(default_factory=Patient)
    code_systems: tuple[str, ...] = CODE_SYSTEMS
    max_suggestions: int = 20


@dataclass(frozen=True)
class CodeInfo:
    """A code as the pipeline sees it (never an ORM row)."""

    system: str
    code: str
    description: str
    is_billable: bool
    parent: str | None = None


@dataclass(frozen=True)
class TermEntry:
    """A phrase that names a code: description, inclusion term, index term, synonym or abbreviation."""

    system: str
    code: str
    text: str
    source: str


@dataclass(frozen=True)
class Section:
    title: str
    start: int
    end: int


@dataclass(frozen=True)
class Mention:
    """A span of the note that names a condition or service, with its context."""

    start: int
    end: int
    text: str
    section: str
    assertion: str = "present"
    candidate_codes: tuple[str, ...] = ()
    source: str = "dictionary"
    sentence_start: int = 0
    sentence_end: int = 0


@dataclass(frozen=True)
class Evidence:
    start: int
    end: int
    text: str
    section: str
    assertion: str = "present"


@dataclass(frozen=True)
class Flag:
    kind: str
    message: str


@dataclass(frozen=True)
class Suggestion:
    system: str
    code: str
    description: str
    score: float
    evidence: tuple[Evidence, ...]
    flags: tuple[Flag, ...] = ()
    rank: int = 0
    units: int = 1  # CPT units of service (laceration add-ons, lesions, vaccine components); 1 for ICD


@dataclass(frozen=True)
class Excluded:
    text: str
    start: int
    end: int
    reason: str
    candidate_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CodingResult:
    suggestions: tuple[Suggestion, ...]
    excluded: tuple[Excluded, ...] = ()
    warnings: tuple[str, ...] = ()
    model_version: str = ""
    rules_version: str = ""
    codeset_versions: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class CandidateSource(Protocol):
    """Read access to the code sets the pipeline links against."""

    def codeset_version(self, system: str, on: dt.date | None = None) -> str:
        """Version label of `system` in force on date `on` (latest when None)."""
        ...

    def is_in_force(self, system: str, on: dt.date) -> bool:
        """Whether a loaded version of `system` covers date `on` (else the nearest one is used)."""
        ...

    def codes(self, system: str) -> Mapping[str, CodeInfo]:
        """Every code of `system` (billable or not), keyed by code with dots."""
        ...

    def terms(self, system: str) -> Iterable[TermEntry]:
        """Every phrase that names a code of `system`."""
        ...

    def instructions(self, system: str, kind: str) -> Mapping[str, Sequence[str]]:
        """Tabular instructions of one kind (excludes1, excludes2, code_first, use_additional,
        code_also, seven_chr_def) keyed by the code that carries them."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """Links free-text phrases to codes by similarity (the encoder)."""

    version: str
    # The cosine floor calibrated for this model (its top code is used only at or above it); None: the
    # pipeline's default (rules.json thresholds.encoder_min_cosine).
    min_cosine: float | None
    # (cosine, share of links that were right) knots, increasing in both, measured on notes the model was not
    # trained on; None: uncalibrated (the score then rises linearly from the floor).
    calibration: Sequence[tuple[float, float]] | None

    def link(self, phrases: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        """For each phrase, the top-k (code, cosine) pairs."""
        ...
