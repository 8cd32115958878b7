"""Mentions: dictionary phrases (Aho-Corasick) and regular-expression facts (resources/patterns.json)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from nlp.components.dictionary import Dictionary
from nlp.components.state import NoteState, Span


class DictionaryMentions:
    name = "mentions"
    requires: tuple[str, ...] = ()
    assigns: tuple[str, ...] = ("spans",)

    def __init__(self, dictionary: Dictionary, patterns: Sequence[dict[str, Any]]) -> None:
        self._dictionary = dictionary
        self._patterns = [
            (p, re.compile(p["regex"], 0 if p.get("case_sensitive") else re.IGNORECASE)) for p in patterns
        ]

    def __call__(self, state: NoteState) -> None:
        text = state.text
        spans = [
            Span(h.start, h.end, text[h.start : h.end], h.codes, h.source, key=h.key)
            for h in self._dictionary.match(text)
        ]
        for pattern, regex in self._patterns:
            for m in regex.finditer(text):
                value = m.group("v") if "v" in regex.groupindex and m.group("v") else ""
                code = pattern.get("code")
                spans.append(Span(m.start(), m.end(), m.group(0), (code,) if code else (), "pattern",
                                  key=pattern.get("value", pattern["name"]), value=value))
        # A coded pattern ("HER2-") is more precise than a dictionary phrase inside it ("HER2").
        coded = [s for s in spans if s.source == "pattern" and s.codes]
        spans = [
            s for s in spans
            if s.source == "pattern" or not any(c.start < s.end and s.start < c.end for c in coded)
        ]
        spans.sort(key=lambda s: (s.start, -s.end))
        state.spans = spans


_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022#])?\s*")
_CLAUSE_END = re.compile(r"\s+(?:-|--|;|:)\s+|[.;:,(]")
_SPLIT = re.compile(r"[,;:()]|\s(?:and|with|without|but|or|due to|secondary to|after|which|who|that)\s", re.I)


def problem_clauses(text: str, s: int, e: int, whole_note: bool) -> list[tuple[int, int, str]]:
    """Problem phrases of the sentence text[s:e] as (start, end, phrase): the list item's head (a section
    line), or every clause (a note without sections). The encoder's training data (training/data.py) cuts
    CodiEsp case reports with this same function, so the model sees the phrases the pipeline will send it."""
    sentence = text[s:e]
    lead = _ITEM.match(sentence)
    begin = lead.end() if lead else 0
    if not whole_note:
        cut = _CLAUSE_END.search(sentence, begin)
        pieces = [(begin, cut.start() if cut else len(sentence))]
    else:
        pieces, last = [], begin
        for m in _SPLIT.finditer(sentence, begin):
            pieces.append((last, m.start()))
            last = m.end()
        pieces.append((last, len(sentence)))
    out = []
    for a, b in pieces:
        chunk = sentence[a:b].strip(" .-\n\t")
        if not chunk or not 2 <= len(chunk.split()) <= 10 or len(chunk) > 120:
            continue
        start = s + sentence.index(chunk, a)
        out.append((start, start + len(chunk), chunk))
    return out


def link_score(cosine: float, calibration: Sequence[tuple[float, float]] | None, floor: float) -> float:
    """How likely an encoder link at `cosine` is right: the model's calibration knots (cosine, precision)
    interpolated linearly and held flat beyond the ends; uncalibrated, 0.1 at the floor plus 2 per unit of
    cosine above it."""
    if not calibration:
        return 0.1 + (cosine - floor) * 2
    xs = [float(c) for c, _ in calibration]
    ys = [float(p) for _, p in calibration]
    return float(np.interp(cosine, xs, ys))


class EncoderMentions:
    """Problem phrases of assessment-like sections that no dictionary entry matched, linked by the encoder."""

    name = "encoder_mentions"
    requires: tuple[str, ...] = ("spans", "sections", "sentences")
    assigns: tuple[str, ...] = ("spans",)

    def __init__(self, scorer: Any, billable: set[str], min_cosine: float, sections: tuple[str, ...],
                 *, floor: float | None = None, skip_leading_words: Iterable[str] = ()) -> None:
        """`min_cosine`: links below it are dropped; `floor`: the model's own floor, where an uncalibrated
        score starts (defaults to `min_cosine`); phrases starting with one of `skip_leading_words` (plan and
        action statements) are not linked."""
        self._scorer = scorer
        self._billable = billable
        self._min_cosine = min_cosine
        self._floor = min_cosine if floor is None else floor
        self._calibration = scorer.calibration
        self._sections = sections
        self._skip = frozenset(w.lower() for w in skip_leading_words)

    def _is_problem_phrase(self, phrase: str, titles: set[str]) -> bool:
        words = phrase.lower().split()
        return bool(words) and words[0].strip(",.;:") not in self._skip and phrase.lower() not in titles

    def __call__(self, state: NoteState) -> None:
        phrases: list[tuple[int, int, str]] = []
        regions = [(sec.start, sec.end) for sec, kind in zip(state.sections, state.section_kinds, strict=True)
                   if kind in self._sections]
        titles = {sec.title.strip().lower() for sec in state.sections}
        # A note without any section header (a case report, a letter): every clause is a candidate.
        whole_note = not state.sections
        if whole_note:
            regions = [(0, len(state.text))]
        for r_start, r_end in regions:
            for s, e in state.sentences:
                if s < r_start or e > r_end:
                    continue
                for start, end, phrase in problem_clauses(state.text, s, e, whole_note):
                    if any(sp.start < end and start < sp.end and sp.source != "medication" for sp in state.spans):
                        continue
                    if self._is_problem_phrase(phrase, titles):
                        phrases.append((start, end, phrase))
        if not phrases:
            return
        results = self._scorer.link([p for _, _, p in phrases], k=3)
        for (start, end, phrase), top in zip(phrases, results, strict=True):
            best = [(c, cos) for c, cos in ((_dotted(c), cos) for c, cos in top) if c in self._billable]
            if best and best[0][1] >= self._min_cosine:
                cosine = best[0][1]
                state.spans.append(Span(start, end, phrase, (best[0][0],), "encoder", key=phrase, cosine=cosine,
                                        link_score=link_score(cosine, self._calibration, self._floor)))
        state.spans.sort(key=lambda s: (s.start, -s.end))


def _dotted(code: str) -> str:
    code = code.strip().upper()
    return f"{code[:3]}.{code[3:]}" if len(code) > 3 and "." not in code else code
