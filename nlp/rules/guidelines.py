"""Coding rules that turn asserted mentions into codes, following the ICD-10-CM Official Guidelines.

Every function here is pure: it takes codes, spans and the rule data of resources/rules.json and
returns decisions. The coder component (nlp/components/coding.py) applies them in order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nlp.rules.codetree import CodeTree

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def laterality(text: str, rules: Mapping[str, Any]) -> str | None:
    """The one side named in `text` (right/left/bilateral), or None when none or several are named."""
    toks = set(words(text))
    sides = [side for side, ws in rules["laterality"].items() if any(w in toks for w in ws if len(w) > 1)]
    if "bilateral" in sides:
        return "bilateral"
    return sides[0] if len(sides) == 1 else None


def encounter_kind(context: str, rules: Mapping[str, Any]) -> str:
    """initial (default: active treatment), subsequent (healing/follow-up) or sequela, from cue words."""
    low = context.lower()
    for kind in ("sequela", "subsequent"):
        if any(cue in low for cue in rules["encounter_7th"][kind]):
            return kind
    return "initial"


def specify(tree: CodeTree, code: str, context: str, rules: Mapping[str, Any]) -> str | None:
    """The billable code for `code` given its context: descend by documented laterality, then by the
    encounter for seventh characters, else to the catch-all ("unspecified") child. None when no
    billable code can be reached without guessing."""
    current = code
    for _ in range(5):
        if tree.is_billable(current):
            return current
        if tree.has_extensions(current):
            return tree.extension_child(current, encounter_kind(context, rules))
        side = laterality(context, rules)
        nxt = tree.side_child(current, side) if side else None
        if nxt is None:
            nxt = tree.default_child(current)
        if nxt is None:
            return None
        current = nxt
    return current if tree.is_billable(current) else None


def is_chronic(code: str, rules: Mapping[str, Any]) -> bool:
    """Conditions that "history of" does not make past (a history of hypertension is hypertension)."""
    bare = code.replace(".", "")
    return any(bare.startswith(p.replace(".", "")) for p in rules["chronic_prefixes"])


def history_code(code: str, table: Sequence[Mapping[str, str]], family: bool) -> str | None:
    """Personal (Z85-Z87, I25.2) or family (Z80-Z84) history code for a condition code, longest prefix wins."""
    bare = code.replace(".", "")
    column = "family_history" if family else "personal_history"
    best: tuple[int, str] | None = None
    for row in table:
        prefix = row["prefix"].replace(".", "")
        if bare.startswith(prefix) and row[column] and (best is None or len(prefix) > best[0]):
            best = (len(prefix), row[column])
    return best[1] if best else None


def diabetes_combination(
    diabetes_code: str, other: str, rules: Mapping[str, Any], tree: CodeTree
) -> tuple[str, bool] | None:
    """(combination code, keep the other code too) when `other` is a complication that the
    guidelines presume linked to diabetes ("with"), e.g. E11.9 + N18.4 -> (E11.22, True)."""
    category = diabetes_code[:3]
    if category not in rules["diabetes_categories"]:
        return None
    for rule in rules["diabetes_complications"]:
        if any(tree.is_under(other, p) for p in rule["prefixes"]):
            combined = category + rule["suffix"]
            if combined not in tree:
                return None
            keep = rule["keep_complication"]
            if isinstance(keep, str):
                keep = tree.is_under(other, keep)
            return combined, bool(keep)
    return None


def hypertension_combination(
    has_ckd: bool, ckd_late: bool, has_heart_failure: bool, rules: Mapping[str, Any]
) -> str | None:
    """The hypertensive combination code presumed by the guidelines (I11/I12/I13), or None."""
    combos = rules["hypertension_combinations"]
    if has_ckd and has_heart_failure:
        return combos["heart_failure_ckd_late" if ckd_late else "heart_failure_ckd_early"]
    if has_ckd:
        return combos["ckd_late" if ckd_late else "ckd_early"]
    if has_heart_failure:
        return combos["heart_failure"]
    return None


def bmi_code(value: float, age: int | None, percentile: bool) -> str | None:
    """Z68 code for a BMI value (adults) or BMI-for-age percentile (ages 2-19)."""
    if percentile:
        if age is not None and age >= 20:
            return None
        if value < 5:
            return "Z68.51"
        if value < 85:
            return "Z68.52"
        if value < 95:
            return "Z68.53"
        return "Z68.54"
    if age is not None and age < 20:
        return None
    if value < 20:
        return "Z68.1"
    if value < 40:
        return f"Z68.{int(value)}"
    for upper, code in ((45, "Z68.41"), (50, "Z68.42"), (60, "Z68.43"), (70, "Z68.44")):
        if value < upper:
            return code
    return "Z68.45"


def blood_alcohol_code(mg_per_dl: float) -> str:
    """Y90 code for a blood alcohol level in mg/dL (= mg/100 ml)."""
    for upper, code in ((20, "Y90.0"), (40, "Y90.1"), (60, "Y90.2"), (80, "Y90.3"), (100, "Y90.4"),
                        (120, "Y90.5"), (200, "Y90.6"), (240, "Y90.7")):
        if mg_per_dl < upper:
            return code
    return "Y90.8"


def gestation_code(weeks: int) -> str | None:
    """Z3A code for completed weeks of gestation."""
    if weeks < 8:
        return "Z3A.01"
    if weeks > 42:
        return "Z3A.49"
    return f"Z3A.{weeks:02d}"


def excludes1_conflict(a: str, b: str, excludes1: Mapping[str, Sequence[str]], tree: CodeTree) -> bool:
    """Whether an Excludes1 note on `a` (or its ancestors) names `b` (a code, a category or a range)."""
    for holder in [a, *tree.ancestors(a)]:
        for target in excludes1.get(holder, ()):
            if _covers(target, b):
                return True
    return False


def _covers(target: str, code: str) -> bool:
    t = target.strip().upper().rstrip("-").rstrip(".")
    if not t or not t[0].isalpha():
        return False
    if "-" in t:
        lo, hi = (x.replace(".", "") for x in t.split("-", 1))
        bare = code.replace(".", "")
        return lo[:3] <= bare[:3] <= hi[:3] if len(lo) == 3 and len(hi) == 3 else lo <= bare[: len(lo)] <= hi
    return code.replace(".", "").startswith(t.replace(".", ""))
