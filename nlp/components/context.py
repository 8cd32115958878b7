"""Assertions with medSpaCy ConText (negated, family, hypothetical, uncertain, historical).

Runs on a spaCy doc whose sentence boundaries come from our splitter and whose entities are the
mentions found by the dictionary. The rule file (resources/context_rules.json) is medSpaCy's default
set with its known misses fixed. The section a mention sits in adds what ConText cannot see: a mention
under "Family History" is the family's, a mention under "Past Medical History" is historical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlp.components.state import NoteState

CATEGORY_TO_ASSERTION = {
    "NEGATED_EXISTENCE": "negated",
    "FAMILY": "family",
    "HYPOTHETICAL": "hypothetical",
    "POSSIBLE_EXISTENCE": "uncertain",
    "HISTORICAL": "historical",
}
# When several modifiers apply, the one that most changes what may be coded wins.
PRECEDENCE = ("negated", "family", "hypothetical", "uncertain", "historical")
SECTION_ASSERTION = {"family_history": "family", "pmh": "historical", "psh": "historical", "allergies": "historical"}


def make_doc(nlp: Any, text: str, sentences: list[tuple[int, int]]) -> Any:
    """A spaCy doc of `text` with sentence starts set from `sentences` (character offsets)."""
    doc = nlp.make_doc(text)
    starts = {s for s, _ in sentences}
    for tok in doc:
        tok.is_sent_start = tok.i == 0 or tok.idx in starts
    return doc


class DocMaker:
    name = "doc"
    requires: tuple[str, ...] = ("sentences",)
    assigns: tuple[str, ...] = ("doc",)

    def __init__(self, nlp: Any) -> None:
        self._nlp = nlp

    def __call__(self, state: NoteState) -> None:
        state.doc = make_doc(self._nlp, state.text, state.sentences)


class ContextAssertions:
    """Sets each span's assertion, section and sentence."""

    name = "context"
    requires: tuple[str, ...] = ("doc", "sections", "spans")
    assigns: tuple[str, ...] = ("assertions",)

    def __init__(self, nlp: Any, rules_path: Path) -> None:
        from medspacy.context import ConText

        self._context = ConText(nlp, rules=str(rules_path), prune_on_target_overlap=True)

    def __call__(self, state: NoteState) -> None:
        from spacy.tokens import Span as SpacySpan
        from spacy.util import filter_spans

        doc = state.doc
        by_token_span: dict[tuple[int, int], list[int]] = {}
        spacy_spans = []
        for i, span in enumerate(state.spans):
            title, kind = state.section_at(span.start)
            span.section, span.section_kind = title, kind
            span.sentence = state.sentence_at(span.start)
            sp = doc.char_span(span.start, span.end, alignment_mode="expand")
            if sp is None:
                continue
            ent = SpacySpan(doc, sp.start, sp.end, label="CONDITION")
            by_token_span.setdefault((sp.start, sp.end), []).append(i)
            spacy_spans.append(ent)
        doc.ents = filter_spans(spacy_spans)
        self._context(doc)
        assessed: set[int] = set()
        for ent in doc.ents:
            categories = {m.category for m in ent._.modifiers}
            found = {CATEGORY_TO_ASSERTION[c] for c in categories if c in CATEGORY_TO_ASSERTION}
            # RESOLVED (our own category): explicitly over ("outgrown", "removed", "quit") -> history,
            # even for conditions that "history of" alone leaves current.
            is_resolved = "RESOLVED" in categories
            if is_resolved:
                found.add("historical")
            for i in by_token_span.get((ent.start, ent.end), []):
                span = state.spans[i]
                span.is_resolved = is_resolved
                assessed.add(i)
                section_assertion = SECTION_ASSERTION.get(span.section_kind)
                if section_assertion:
                    found.add(section_assertion)
                span.assertion = next((a for a in PRECEDENCE if a in found), "present")
        # Spans that lost the overlap filter still get their section's assertion.
        for i, span in enumerate(state.spans):
            if i not in assessed:
                span.assertion = SECTION_ASSERTION.get(span.section_kind, span.assertion)
