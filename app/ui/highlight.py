"""Split a note into segments so that every evidence span can be marked, overlapping spans included.

The page renders each segment's text through Jinja's autoescaping; nothing here builds HTML, so a note
containing markup shows as text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    label: str  # "icd10cm:E11.9" for evidence, "excluded:<reason>" for excluded mentions
    is_excluded: bool = False


@dataclass(frozen=True)
class Segment:
    text: str
    codes: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    @property
    def is_marked(self) -> bool:
        return bool(self.codes or self.excluded)

    @property
    def code_values(self) -> str:
        """The codes without their systems, space-separated ("E11.9 36415")."""
        return " ".join(label.split(":", 1)[-1] for label in self.codes)


def segments(text: str, spans: Iterable[Span]) -> list[Segment]:
    """Cut `text` at every span boundary; each piece lists the spans covering it.

    Spans outside the text or inverted are dropped (a stored note that no longer matches its offsets must
    not break the page). Labels keep the order in which spans were given (suggestion rank).
    """
    valid = [s for s in spans if 0 <= s.start < s.end <= len(text)]
    cuts = sorted({0, len(text), *(s.start for s in valid), *(s.end for s in valid)})
    out: list[Segment] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        covering = [s for s in valid if s.start <= a and b <= s.end]
        codes = tuple(dict.fromkeys(s.label for s in covering if not s.is_excluded))
        excluded = tuple(dict.fromkeys(s.label for s in covering if s.is_excluded))
        if out and out[-1].codes == codes and out[-1].excluded == excluded:
            out[-1] = Segment(out[-1].text + text[a:b], codes, excluded)
        else:
            out.append(Segment(text[a:b], codes, excluded))
    return out
