"""The ICD-10-CM hierarchy as the rules need it: billable checks, default and lateral children."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from nlp.types import CodeInfo

SIDE_WORDS = {"right": ("right",), "left": ("left",), "bilateral": ("bilateral",)}


class CodeTree:
    """Parent/child navigation over a code system's codes."""

    def __init__(self, codes: Mapping[str, CodeInfo]) -> None:
        self.codes = codes
        children: dict[str, list[str]] = defaultdict(list)
        for info in codes.values():
            if info.parent:
                children[info.parent].append(info.code)
        self.children = {k: sorted(v) for k, v in children.items()}

    def __contains__(self, code: str) -> bool:
        return code in self.codes

    def is_billable(self, code: str) -> bool:
        info = self.codes.get(code)
        return bool(info and info.is_billable)

    def description(self, code: str) -> str:
        info = self.codes.get(code)
        return info.description if info else ""

    def ancestors(self, code: str) -> list[str]:
        """Parents of `code`, nearest first."""
        out: list[str] = []
        info = self.codes.get(code)
        # The loaded hierarchy may loop at the top (a chapter naming itself); stop at the first repeat.
        while info and info.parent and info.parent in self.codes and info.parent not in out and info.parent != code:
            out.append(info.parent)
            info = self.codes.get(info.parent)
        return out

    def is_under(self, code: str, prefix: str) -> bool:
        """Whether `code` is `prefix` or one of its descendants (prefixes with or without the dot)."""
        return code.replace(".", "").startswith(prefix.replace(".", ""))

    def side_child(self, code: str, side: str) -> str | None:
        """The child of `code` for laterality `side` (right/left/bilateral), if the code splits by side."""
        kids = self.children.get(code, [])
        words = SIDE_WORDS.get(side, ())
        others = [w for s, ws in SIDE_WORDS.items() if s != side for w in ws]
        matches = [
            k for k in kids
            if any(w in self.description(k).lower().split() for w in words)
            and not any(w in self.description(k).lower().split() for w in others)
        ]
        return matches[0] if len(matches) == 1 else None

    def default_child(self, code: str) -> str | None:
        """The catch-all child used when nothing more specific is documented: the "unspecified" one,
        else the one ending in 9, else the one ending in 0."""
        kids = [k for k in self.children.get(code, []) if not _is_extension(k)]
        if not kids:
            return None
        unspecified = [k for k in kids if "unspecified" in self.description(k).lower()]
        # "Unspecified" that refers only to side or site is still the right default when nothing is documented.
        if unspecified:
            return sorted(unspecified, key=lambda k: (self.description(k).lower().count("unspecified") * -1, k))[0]
        for suffix in ("9", "0"):
            ends = [k for k in kids if k.endswith(suffix)]
            if ends:
                return ends[0]
        return kids[0] if len(kids) == 1 else None

    def has_extensions(self, code: str) -> bool:
        return any(_is_extension(k) for k in self.children.get(code, []))

    def extension_child(self, code: str, encounter: str) -> str | None:
        """The seventh-character code under `code` for `encounter` (initial/subsequent/sequela)."""
        # Placeholder X codes (S01.01XA, W11.XXXA) sit directly under the code they extend.
        candidates = [k for k in self.children.get(code, []) if _is_extension(k)]
        if not candidates:
            return None
        words = {"initial": ("initial encounter",), "subsequent": ("subsequent encounter",), "sequela": ("sequela",)}
        wanted = [k for k in candidates if any(w in self.description(k).lower() for w in words[encounter])]
        if not wanted:
            return None
        # Closed fracture and routine healing are the defaults when the note does not say otherwise.
        for pref in ("closed fracture", "routine healing"):
            preferred = [k for k in wanted if pref in self.description(k).lower()]
            if preferred:
                return preferred[0]
        return wanted[0]


def _is_extension(code: str) -> bool:
    bare = code.replace(".", "")
    return len(bare) == 7 and (bare[-1].isalpha() or "X" in bare[3:])
