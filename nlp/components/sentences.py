"""Fast rule sentence splitter that respects clinical line structure (headers, lists, wrapped lines)."""

from __future__ import annotations

import re

from nlp.components.state import NoteState

# A period ends a sentence unless it follows a list number ("1."), a single letter or a common abbreviation.
_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|(?<=;)\s+")
_NO_SPLIT_BEFORE = re.compile(r"(?:\b(?:\d{1,2}|[A-Za-z]|dr|mr|mrs|ms|vs|st|no|approx|pt|e\.g|i\.e|etc)\.)$", re.I)
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022#])\s+")
_HEADER_LINE = re.compile(r"^\s*[A-Za-z][A-Za-z /&'-]{0,40}:\s*")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence (start, end) offsets: lines are joined only when a line wraps mid-sentence."""
    lines: list[tuple[int, int]] = []
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if body.strip():
            lines.append((pos, pos + len(body)))
        pos += len(line)
    blocks: list[list[int]] = []
    for s, e in lines:
        line = text[s:e]
        if blocks:
            ps, pe = blocks[-1]
            prev = text[ps:pe].rstrip()
            wraps = (
                prev
                and prev[-1] not in ".:;!?"
                and line[:1].islower()
                and not _LIST_ITEM.match(line)
                and s - pe == 1
            )
            if wraps:
                blocks[-1][1] = e
                continue
        blocks.append([s, e])
    out: list[tuple[int, int]] = []
    for s, e in blocks:
        chunk = text[s:e]
        start = 0
        for m in _END.finditer(chunk):
            head = chunk[start : m.start()]
            if _NO_SPLIT_BEFORE.search(head):
                continue
            out.append((s + start, s + m.start()))
            start = m.end()
        out.append((s + start, e))
    return [(a, b) for a, b in out if text[a:b].strip()]


class SentenceSplitter:
    name = "sentences"
    requires: tuple[str, ...] = ()
    assigns: tuple[str, ...] = ("sentences",)

    def __call__(self, state: NoteState) -> None:
        state.sentences = split_sentences(state.text)
