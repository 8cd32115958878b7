"""The dictionary of phrases that name codes, matched with Aho-Corasick over normalised tokens.

Built once at start-up from the code set (descriptions, inclusion terms, includes, index terms when
imported) and the project's own resources (synonyms, abbreviations, medications). Descriptions are
cleaned first: "Type 2 diabetes mellitus without complications" is not how clinicians write, and its
"without" would read as a negation, so the phrase indexed is "type 2 diabetes mellitus".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ahocorasick

from nlp.text import Normalizer, TokenStream
from nlp.types import CodeInfo, TermEntry

SOURCE_RANK = {"synonym": 0, "medication": 0, "description": 1, "inclusion": 2, "includes": 3, "index": 4}
_PAREN = re.compile(r"\s*\([^)]*\)")
_INJURY = re.compile(
    r"^(laceration|puncture wound|abrasion|contusion|sprain|strain|open bite|superficial foreign body)"
    r"( without foreign body| with foreign body)? of (?:the )?(.+)$"
)
_BREAK = re.compile(r"[.;:!?\n]")
_ASIDE = re.compile(r"\([^()\n]{1,80}\)")
_ICD = re.compile(r"^[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?$")
_NEGATION_START = ("no ", "not ", "without ", "non ", "absence ", "negative ")
_INDEX_SKIP_SUB = ("with", "without", "due to", "in ", "see", "following", "and ", "by ", "complicat", "from ", "of ",
                   "after ", "during ", "associated", "involving", "specified", "other", "unspecified", "nec", "nos")

MAX_CODES_PER_PHRASE = 4


@dataclass(frozen=True)
class Hit:
    """One dictionary match: note offsets, the normalised key and its codes, best first."""

    start: int
    end: int
    key: str
    codes: tuple[str, ...]
    source: str
    n_tokens: int


def is_seventh_character_code(code: str) -> bool:
    """Seven-character codes carry an extension (encounter, episode...), chosen by rules, never by phrase."""
    bare = code.replace(".", "")
    return len(bare) == 7 and (bare[-1].isalpha() or "X" in bare[3:])


def description_variants(description: str, strip: Sequence[str]) -> set[str]:
    """Clinician-like forms of a tabular description (nonessential parentheses dropped or inlined,
    "unspecified"/"NOS"/"without complications" removed)."""
    d = description.lower()
    forms = {d, _PAREN.sub("", d), d.replace("(", "").replace(")", "")}
    # "left female breast": notes say "left breast"; the patient's sex picks the code later.
    forms |= {f.replace(" female ", " ").replace(" male ", " ") for f in forms}
    out = set()
    for f in forms:
        g = f
        for s in strip:
            g = g.replace(s, " ")
        out.add(" ".join(g.replace(",", " ").split()))
        out.add(" ".join(f.replace(",", " ").split()))
    for o in list(out):
        m = _INJURY.match(o)
        if m:
            injury, fb, site = m.group(1), m.group(2) or "", m.group(3)
            # "Laceration without foreign body of scalp" is written "scalp laceration" or
            # "laceration of scalp without foreign body"; no foreign body is the default.
            out.add(f"{site} {injury}")
            out.add(f"{injury} of {site}{fb}")
            out.add(f"{injury} of {site}")
    return {o for o in out if o}


def index_variants(path: str) -> set[str]:
    """Phrases from an index path: "Bronchitis > acute" -> "acute bronchitis", "bronchitis acute"."""
    parts = [p.strip() for p in path.split(" > ")]
    mains = set()
    for alt in _PAREN.sub("", parts[0]).split(","):
        if alt.strip():
            mains.add(alt.strip().lower())
    if len(parts) == 1:
        return mains
    if len(parts) > 2:
        return set()
    sub = _PAREN.sub("", parts[1]).strip().lower()
    if not sub or sub.startswith(_INDEX_SKIP_SUB) or "-" in sub[:1]:
        return set()
    return {f"{sub} {m}" for m in mains} | {f"{m} {sub}" for m in mains}


class Dictionary:
    """Phrase -> codes automaton. `match` returns the longest non-overlapping hits in a note."""

    def __init__(self, automaton: Any, normalizer: Normalizer, phrase_count: int) -> None:
        self._automaton = automaton
        self._normalizer = normalizer
        self.phrase_count = phrase_count

    @classmethod
    def build(
        cls,
        normalizer: Normalizer,
        codes: Mapping[str, CodeInfo],
        terms: Iterable[TermEntry],
        synonyms: Sequence[Mapping[str, str]],
        medications: Sequence[Mapping[str, str]],
        rules: Mapping[str, Any],
    ) -> Dictionary:
        """Index every phrase; a phrase shared by several codes keeps the best few (source, billable, exact)."""
        strip = rules["description_strip"]
        stop = set(rules["stop_phrases"])
        min_len = int(rules["min_single_token_len"])
        ranked: dict[str, dict[str, tuple[int, int, int, int, str]]] = {}

        def add(text: str, code: str, source: str, exact: int) -> None:
            key = normalizer.phrase(text)
            if not key or key in stop or key.startswith(_NEGATION_START):
                return
            if " " not in key and len(key) < min_len and source not in ("synonym", "medication"):
                return
            info = codes.get(code)
            billable = 0 if (info is None or info.is_billable) else 1
            rank = (SOURCE_RANK.get(source, 5), billable, exact, len(code), source)
            slot = ranked.setdefault(key, {})
            if code not in slot or rank < slot[code]:
                slot[code] = rank

        for info in codes.values():
            if not _ICD.match(info.code) or is_seventh_character_code(info.code):
                continue
            for variant in description_variants(info.description, strip):
                add(variant, info.code, "description", 0 if variant == info.description.lower() else 1)
        for term in terms:
            if term.code not in codes or is_seventh_character_code(term.code):
                continue
            if term.source == "index":
                # One-word index entries ("Impression", "Social", "Diabetic") are ordinary words in notes.
                for variant in index_variants(term.text):
                    if " " in variant.strip():
                        add(variant, term.code, "index", 1)
            else:
                for variant in description_variants(term.text, strip):
                    add(variant, term.code, term.source, 1)
        for row in synonyms:
            add(row["phrase"], row["code"], "synonym", 0)
        for row in medications:
            add(row["drug"], row["code"], "medication", 0)

        automaton = ahocorasick.Automaton()
        for key, slot in ranked.items():
            best = sorted(slot.items(), key=lambda kv: kv[1])[:MAX_CODES_PER_PHRASE]
            automaton.add_word(
                f" {key} ", (key, tuple(c for c, _ in best), best[0][1][4], key.count(" ") + 1)
            )
        automaton.make_automaton()
        return cls(automaton, normalizer, len(ranked))

    def match(self, text: str) -> list[Hit]:
        """Longest, leftmost non-overlapping phrase matches of `text` at token boundaries.

        Parenthetical asides are read twice, as written and skipped, so that "Typical
        (cavotricuspid isthmus-dependent) atrial flutter" still meets "typical atrial flutter"."""
        tokens = self._normalizer.tokens(text)
        found = self._candidates(tokens, text)
        asides = [(m.start(), m.end()) for m in _ASIDE.finditer(text)]
        if asides:
            kept = [t for t in tokens if not any(a <= t[1] < b for a, b in asides)]
            if len(kept) < len(tokens):
                found.extend(self._candidates(kept, text))
        found.sort(key=lambda f: (-f[2], f[0], f[1]))
        hits: list[Hit] = []
        for start, end, n, (key, codes_, source, _) in found:
            if any(h.start < end and start < h.end for h in hits):
                continue
            hits.append(Hit(start, end, key, codes_, source, n))
        hits.sort(key=lambda h: h.start)
        return hits

    def _candidates(self, tokens: Sequence[tuple[str, int, int]], text: str) -> list[tuple[int, int, int, Any]]:
        # A phrase never runs across a sentence or clause break: a marker token sits in each such gap.
        marked: list[tuple[str, int, int]] = []
        for i, tok in enumerate(tokens):
            if i and _BREAK.search(text[tokens[i - 1][2]:tok[1]]):
                marked.append(("|", tok[1], tok[1]))
            marked.append(tok)
        stream = TokenStream(marked)
        out = []
        for end_pos, value in self._automaton.iter(stream.string):
            start_pos = end_pos - len(value[0]) - 1  # the space before the key
            first = stream.token_index(start_pos + 1)
            last = first + value[3] - 1
            start, end = stream.span(first, last)
            out.append((start, end, value[3], value))
        return out
