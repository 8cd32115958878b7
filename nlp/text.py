"""Token normalisation shared by the dictionary and the note, so that both sides meet in one form.

A note is turned into a stream of normalised tokens, each pointing back to the characters it came
from. Abbreviations expand inside the stream ("CKD 3b" -> "chronic kidney disease 3b") while their
tokens still point at the original characters, so every match maps to exact offsets in the note.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:'s\b)?")


@dataclass(frozen=True)
class Abbreviation:
    tokens: tuple[str, ...]
    expansion: tuple[str, ...]
    is_case_sensitive: bool


def stem(token: str) -> str:
    """Light plural folding applied identically to notes and phrases ("stones" -> "stone")."""
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def raw_tokens(text: str) -> list[tuple[str, int, int]]:
    """Alphanumeric runs with offsets; a possessive "'s" stays in the span but not in the token."""
    out = []
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if tok.endswith("'s"):
            tok = tok[:-2]
        out.append((tok, m.start(), m.end()))
    return out


class Normalizer:
    """Maps text to normalised tokens, expanding abbreviations (longest key first)."""

    def __init__(self, abbreviations: Sequence[Abbreviation]) -> None:
        self._by_first: dict[str, list[Abbreviation]] = {}
        for a in sorted(abbreviations, key=lambda a: -len(a.tokens)):
            self._by_first.setdefault(a.tokens[0], []).append(a)

    def tokens(self, text: str) -> list[tuple[str, int, int]]:
        """Normalised tokens of `text`, each with the (start, end) of the characters it came from."""
        raw = raw_tokens(text)
        out: list[tuple[str, int, int]] = []
        i = 0
        while i < len(raw):
            low = raw[i][0].lower()
            matched = None
            for a in self._by_first.get(low, ()):
                n = len(a.tokens)
                if i + n > len(raw):
                    continue
                window = raw[i : i + n]
                if any(w[0].lower() != t for w, t in zip(window, a.tokens, strict=True)):
                    continue
                # Multi-token keys ("s/p") must be written contiguously, not as two words.
                if n > 1 and any(window[j + 1][1] - window[j][2] > 1 for j in range(n - 1)):
                    continue
                if a.is_case_sensitive and not all(w[0].isupper() or w[0].isdigit() for w in window):
                    continue
                matched = a
                break
            if matched is not None:
                n = len(matched.tokens)
                start, end = raw[i][1], raw[i + n - 1][2]
                for t in matched.expansion:
                    out.append((stem(t), start, end))
                i += n
                continue
            out.append((stem(low), raw[i][1], raw[i][2]))
            i += 1
        return out

    def phrase(self, text: str) -> str:
        """The normalised key of a dictionary phrase ("" when it has no tokens)."""
        return " ".join(t for t, _, _ in self.tokens(text))


class TokenStream:
    """A note as " tok tok tok " with a map from positions back to note offsets."""

    def __init__(self, tokens: Sequence[tuple[str, int, int]]) -> None:
        self.tokens = list(tokens)
        parts = [" "]
        self._starts: list[int] = []
        pos = 1
        for tok, _, _ in self.tokens:
            self._starts.append(pos)
            parts.append(tok)
            parts.append(" ")
            pos += len(tok) + 1
        self.string = "".join(parts)

    def token_index(self, pos: int) -> int:
        """Index of the token that starts at or before string position `pos`."""
        return bisect.bisect_right(self._starts, pos) - 1

    def span(self, first: int, last: int) -> tuple[int, int]:
        """Note offsets covered by tokens first..last (inclusive)."""
        return self.tokens[first][1], self.tokens[last][2]


def load_abbreviations(rows: Sequence[Mapping[str, str]]) -> list[Abbreviation]:
    """Abbreviations from rows of abbreviations.csv (abbreviation, expansion, case_sensitive)."""
    out = []
    for r in rows:
        key = tuple(t.lower() for t, _, _ in raw_tokens(r["abbreviation"]))
        expansion = tuple(t.lower() for t, _, _ in raw_tokens(r["expansion"]))
        if key and expansion:
            out.append(Abbreviation(key, expansion, r.get("case_sensitive", "0").strip() == "1"))
    return out
