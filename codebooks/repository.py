"""Queries over the code-set database. Implements `nlp.types.CandidateSource`; returns plain objects."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from codebooks.errors import CodeNotFound, CodeSetNotLoaded, UnknownCodeSystem
from codebooks.loaders.common import SYSTEMS
from codebooks.models import Code, CodeSetVersion, Edit, Instruction, Term
from nlp.types import CodeInfo, TermEntry

WORD = re.compile(r"[a-z0-9]+")
CODE_LIKE = re.compile(r"^[A-Za-z][0-9][0-9A-Za-z](?:\.?[0-9A-Za-z]{0,4})?$|^\d{4}[0-9A-Za-z]$")
LOOKUP_SYSTEMS = ("icd10cm", "cpt", "hcpcs")


@dataclass(frozen=True)
class VersionInfo:
    system: str
    version: str
    effective_from: dt.date
    effective_to: dt.date | None
    source: str
    is_licensed: bool
    code_count: int


@dataclass(frozen=True)
class CodeDetail:
    system: str
    code: str
    short_description: str
    description: str
    is_billable: bool
    kind: str
    parent: str | None
    chapter: str | None
    block: str | None
    version: str
    terms: tuple[tuple[str, str], ...] = ()
    instructions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchHit:
    system: str
    code: str
    description: str
    is_billable: bool
    score: float
    matched: str


def normalize_code(system: str, code: str) -> str:
    code = code.strip().upper()
    if system == "icd10cm" and len(code) > 3 and "." not in code:
        code = f"{code[:3]}.{code[3:]}"
    return code


class CodebookRepository:
    """Read-side of the code sets, bound to a session factory.

    The CandidateSource methods (`codes`, `terms`, `instructions`) read a whole system once and keep
    it; the pipeline builds its matchers from them at start-up, never per request.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._codes: dict[str, dict[str, CodeInfo]] = {}

    # ---- versions -------------------------------------------------------------------------
    def versions(self, system: str | None = None) -> list[VersionInfo]:
        with self._sessions() as s:
            q = select(CodeSetVersion).where(CodeSetVersion.is_complete)
            if system:
                q = q.where(CodeSetVersion.system_name == system)
            rows = s.scalars(q.order_by(CodeSetVersion.system_name, CodeSetVersion.effective_from)).all()
            return [
                VersionInfo(r.system_name, r.version, r.effective_from, r.effective_to, r.source, r.is_licensed,
                            r.code_count)
                for r in rows
            ]

    def _version_row(self, s: Session, system: str, on: dt.date | None = None) -> CodeSetVersion:
        if system not in SYSTEMS:
            raise UnknownCodeSystem(f"unknown code system {system!r}; use one of {', '.join(SYSTEMS)}")
        rows = s.scalars(
            select(CodeSetVersion).where(CodeSetVersion.system_name == system, CodeSetVersion.is_complete)
        ).all()
        if not rows:
            raise CodeSetNotLoaded(f"no {system} code set is loaded; run `notecoder codebook load`")

        def in_force(r: CodeSetVersion) -> bool:
            return on is None or (r.effective_from <= on and (r.effective_to is None or on <= r.effective_to))

        # A licensed CPT file outranks the curated list; then the newest version in force.
        candidates = [r for r in rows if in_force(r)] or rows
        return max(candidates, key=lambda r: (r.is_licensed, r.effective_from, r.id))

    def codeset_version(self, system: str, on: dt.date | None = None) -> str:
        with self._sessions() as s:
            return self._version_row(s, system, on).version

    def is_in_force(self, system: str, on: dt.date) -> bool:
        """Whether a loaded version of `system` covers date `on` (else the nearest one is used)."""
        with self._sessions() as s:
            row = self._version_row(s, system, on)
            return row.effective_from <= on and (row.effective_to is None or on <= row.effective_to)

    # ---- look-up and search ---------------------------------------------------------------
    def lookup(self, system: str, code: str, on: dt.date | None = None) -> CodeDetail:
        code = normalize_code(system, code)
        with self._sessions() as s:
            version = self._version_row(s, system, on)
            row = s.scalar(select(Code).where(Code.version_id == version.id, Code.code == code))
            if row is None:
                raise CodeNotFound(f"{system} code {code} is not in version {version.version}")
            terms = s.execute(
                select(Term.source, Term.text).where(Term.version_id == version.id, Term.code == code)
            ).all()
            notes: dict[str, list[str]] = defaultdict(list)
            for kind, text in s.execute(
                select(Instruction.kind, Instruction.text)
                .where(Instruction.version_id == version.id, Instruction.code == code)
                .order_by(Instruction.id)
            ):
                notes[kind].append(text)
            children = s.scalars(
                select(Code.code).where(Code.version_id == version.id, Code.parent_code == code).order_by(Code.code)
            ).all()
            return CodeDetail(
                system=system,
                code=row.code,
                short_description=row.short_description,
                description=row.long_description,
                is_billable=row.is_billable,
                kind=row.kind,
                parent=row.parent_code,
                chapter=row.chapter,
                block=row.block,
                version=version.version,
                terms=tuple((t.source, t.text) for t in terms),
                instructions={k: tuple(v) for k, v in notes.items()},
                children=tuple(children),
            )

    def search(self, system: str, text: str, limit: int = 20, billable_only: bool = False) -> list[SearchHit]:
        """Codes whose description or terms contain every word of `text`, best first.

        Ranking: whole-word matches over substring matches, descriptions over terms, billable
        codes over categories, then shorter (more general) descriptions. Text that looks like a code
        ("E11.4", "e114", "99213") puts that code and its descendants first.
        """
        words = WORD.findall(text.lower())
        if not words:
            return []
        with self._sessions() as s:
            version = self._version_row(s, system)
            desc = func.lower(Code.long_description)
            q = select(Code.code, Code.long_description, Code.is_billable).where(Code.version_id == version.id)
            for w in words:
                q = q.where(desc.contains(w))
            if billable_only:
                q = q.where(Code.is_billable)
            hits: dict[str, SearchHit] = {}
            for code, description, billable in s.execute(q.limit(2000)):
                hits[code] = SearchHit(system, code, description, billable,
                                       _score(words, description, billable, 1.0), description)
            term_q = (
                select(Term.code, Term.text, Code.long_description, Code.is_billable)
                .join(Code, (Code.version_id == Term.version_id) & (Code.code == Term.code))
                .where(Term.version_id == version.id)
            )
            term_text = func.lower(Term.text)
            for w in words:
                term_q = term_q.where(term_text.contains(w))
            if billable_only:
                term_q = term_q.where(Code.is_billable)
            for code, term, description, billable in s.execute(term_q.limit(2000)):
                score = _score(words, term, billable, 0.9)
                if code not in hits or hits[code].score < score:
                    hits[code] = SearchHit(system, code, description, billable, score, term)
            if CODE_LIKE.match(text.strip()):
                # A code or the start of one: the code itself first, then its descendants, shallow first.
                prefix = normalize_code(system, text)
                prefix_q = select(Code.code, Code.long_description, Code.is_billable).where(
                    Code.version_id == version.id, Code.code.startswith(prefix)
                )
                if billable_only:
                    prefix_q = prefix_q.where(Code.is_billable)
                for code, description, billable in s.execute(prefix_q.order_by(Code.code).limit(limit)):
                    score = 3.0 - 0.1 * (len(code) - len(prefix))
                    hits[code] = SearchHit(system, code, description, billable, score, code)
        return sorted(hits.values(), key=lambda h: (-h.score, h.code))[:limit]

    def edits(self, code: str, on: dt.date | None = None) -> list[tuple[str, str]]:
        """Medicare Code Editor edits (edit_type, code_type) on an ICD-10-CM code."""
        with self._sessions() as s:
            try:
                version = self._version_row(s, "mce", on)
            except CodeSetNotLoaded:
                return []
            return [
                (e, t)
                for e, t in s.execute(
                    select(Edit.edit_type, Edit.code_type).where(
                        Edit.version_id == version.id, Edit.code == normalize_code("icd10cm", code)
                    )
                )
            ]

    # ---- CandidateSource ------------------------------------------------------------------
    def codes(self, system: str) -> Mapping[str, CodeInfo]:
        if system not in self._codes:
            with self._sessions() as s:
                version = self._version_row(s, system)
                rows = s.execute(
                    select(Code.code, Code.long_description, Code.is_billable, Code.parent_code).where(
                        Code.version_id == version.id
                    )
                )
                self._codes[system] = {c: CodeInfo(system, c, d, b, p) for c, d, b, p in rows}
        return self._codes[system]

    def terms(self, system: str) -> Iterable[TermEntry]:
        with self._sessions() as s:
            version = self._version_row(s, system)
            rows = s.execute(
                select(Term.code, Term.text, Term.source).where(Term.version_id == version.id)
            ).all()
        return [TermEntry(system, c, t, src) for c, t, src in rows]

    def instructions(self, system: str, kind: str) -> Mapping[str, Sequence[str]]:
        """Per code, what its notes of `kind` point to: the codes or ranges they name ("E10.-"),
        or the note's text where it names none. Seven-character meanings: see `seven_chr_defs`."""
        out: dict[str, list[str]] = defaultdict(list)
        with self._sessions() as s:
            version = self._version_row(s, system)
            for code, text, targets in s.execute(
                select(Instruction.code, Instruction.text, Instruction.targets).where(
                    Instruction.version_id == version.id, Instruction.kind == kind
                )
            ):
                out[code].extend(targets.split() if targets else [text])
        return dict(out)

    def seven_chr_defs(self, system: str = "icd10cm") -> Mapping[str, Mapping[str, str]]:
        """Seventh-character meanings keyed by the code that defines them (usually the category)."""
        out: dict[str, dict[str, str]] = defaultdict(dict)
        with self._sessions() as s:
            version = self._version_row(s, system)
            for code, char, text in s.execute(
                select(Instruction.code, Instruction.targets, Instruction.text).where(
                    Instruction.version_id == version.id, Instruction.kind == "seven_chr_def"
                )
            ):
                out[code][char] = text
        return dict(out)


def _score(words: Sequence[str], text: str, is_billable: bool, weight: float) -> float:
    tokens = set(WORD.findall(text.lower()))
    whole = sum(1 for w in words if w in tokens) / len(words)
    brevity = 1.0 / (1.0 + len(tokens) / 10.0)
    return weight * (whole + 0.3 * brevity + (0.2 if is_billable else 0.0))


def guess_systems(code: str) -> tuple[str, ...]:
    """Systems a bare code may belong to, most likely first: five digits (or four and a letter) are CPT,
    a letter and four digits HCPCS or an undotted ICD-10-CM code, anything else ICD-10-CM."""
    c = code.strip().upper()
    if re.fullmatch(r"\d{4}[0-9A-Z]", c):
        return ("cpt",)
    if re.fullmatch(r"[A-V]\d{4}", c):
        return ("hcpcs", "icd10cm")
    return ("icd10cm",)
