"""Section detection with medSpaCy's Sectionizer, loaded with the header rules of resources/sections.json."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nlp.components.state import NoteState
from nlp.types import Section


def section_rules(nlp: Any, sections: Sequence[dict[str, Any]]) -> tuple[list[Any], dict[str, str]]:
    """medSpaCy SectionRules for every header (with a colon anywhere; bare only when alone on its line)."""
    from medspacy.section_detection import SectionRule

    rules = []
    title_to_kind: dict[str, str] = {}
    for sec in sections:
        title_to_kind[sec["title"]] = sec["kind"]
        for header in sec["headers"]:
            rules.append(SectionRule(literal=f"{header}:", category=sec["title"]))
            # A bare header ("Final diagnoses") counts only when nothing else is on its line; one- and
            # two-letter headers ("A", "PE") need the colon, or every sentence starting "A ..." would be one.
            if len(header) > 2:
                words = [{"LOWER": t.lower_} for t in nlp.make_doc(header)]
                pattern = words + [{"IS_SPACE": True, "TEXT": {"REGEX": "\n"}}]
                rules.append(SectionRule(literal=header, category=sec["title"], pattern=pattern))
    return rules, title_to_kind


class Sectionizer:
    """Assigns `sections` (title, start, end) and their kinds from the spaCy doc."""

    name = "sections"
    requires: tuple[str, ...] = ("doc",)
    assigns: tuple[str, ...] = ("sections",)

    def __init__(self, nlp: Any, sections: Sequence[dict[str, Any]]) -> None:
        from medspacy.section_detection import Sectionizer as MedspacySectionizer

        rules, self._title_to_kind = section_rules(nlp, sections)
        self._sectionizer = MedspacySectionizer(nlp, rules=None, require_start_line=True)
        self._sectionizer.add(rules)

    def __call__(self, state: NoteState) -> None:
        doc = self._sectionizer(state.doc)
        sections: list[Section] = []
        kinds: list[str] = []
        for sec in doc._.sections:
            if sec.category is None:
                continue
            start = doc[sec.section_span[0]].idx if sec.section_span[0] < len(doc) else len(state.text)
            end_tok = sec.section_span[1]
            end = doc[end_tok - 1].idx + len(doc[end_tok - 1].text) if end_tok > 0 else len(state.text)
            sections.append(Section(sec.category, start, end))
            kinds.append(self._title_to_kind.get(sec.category, "none"))
        state.sections, state.section_kinds = sections, kinds
