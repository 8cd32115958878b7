"""The per-note working state that components read and fill, and the component contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from nlp.types import CodingRequest, Excluded, Flag, Section


@dataclass
class Span:
    """A mention while the pipeline works on it (mutable; becomes `nlp.types.Mention` at the end)."""

    start: int
    end: int
    text: str
    codes: tuple[str, ...]
    source: str
    key: str = ""
    section: str = ""
    section_kind: str = "none"
    assertion: str = "present"
    sentence: tuple[int, int] = (0, 0)
    value: str = ""
    cosine: float = 0.0
    # An encoder span's estimate that its code is right (the model's calibration of `cosine`).
    link_score: float = 0.0
    is_resolved: bool = False


@dataclass
class Finding:
    """A candidate code with the spans that support it, before ranking."""

    code: str
    spans: list[Span]
    score: float = 0.0
    flags: list[Flag] = field(default_factory=list)
    rule: str = ""
    first_assessment_pos: int | None = None

    @property
    def similarity_only(self) -> bool:
        """Only the encoder linked it: no dictionary term, index path or pattern names the code."""
        return all(s.source == "encoder" for s in self.spans)


@dataclass
class NoteState:
    request: CodingRequest
    text: str
    doc: Any = None
    sentences: list[tuple[int, int]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    section_kinds: list[str] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    findings: dict[str, Finding] = field(default_factory=dict)
    excluded: list[Excluded] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def section_at(self, pos: int) -> tuple[str, str]:
        """(title, kind) of the section holding character `pos`; ("", "none") before the first header."""
        for sec, kind in zip(reversed(self.sections), reversed(self.section_kinds), strict=True):
            if sec.start <= pos < max(sec.end, sec.start + 1):
                return sec.title, kind
        return "", "none"

    def sentence_at(self, pos: int) -> tuple[int, int]:
        for s, e in self.sentences:
            if s <= pos < e:
                return s, e
        return pos, pos


class Component(Protocol):
    """A pipeline stage: declares the state fields it reads and the ones it fills."""

    name: str
    requires: tuple[str, ...]
    assigns: tuple[str, ...]

    def __call__(self, state: NoteState) -> None: ...
