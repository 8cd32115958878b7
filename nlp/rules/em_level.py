"""Office/outpatient E/M level (99202-99205, 99212-99215) from the 2021+ MDM table or total time.

Medical decision making has three elements - number and complexity of problems addressed, data
reviewed or ordered, risk of patient management - and the level is the highest one that two of
the three elements meet. Total time on the date of the encounter, when documented, may select the
level instead; the higher of the two is suggested. Everything here is deliberately conservative: a
problem is only counted as chronic-with-exacerbation when the note says so, data counts unique
tests, and prescription drug management needs a management verb next to a prescription drug.
The result is always meant for coder review.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LEVEL_NAMES = {1: "straightforward", 2: "low", 3: "moderate", 4: "high"}
DATA_NAMES = {1: "minimal", 2: "limited", 3: "moderate", 4: "extensive"}
RISK_NAMES = {1: "minimal", 2: "low", 3: "moderate", 4: "high"}
LINE_HEADING = re.compile(r"^\s*([A-Za-z][A-Za-z /&]{0,40}?)\s*:")
NUMBERED = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022])\s+")
NEGATED_STATUS = re.compile(
    r"\b(?:without|no|not|denies|free of)\s+(?:\w+\s+)?(?:acute\s+)?"
    r"(?:exacerbation|flare|progression|worsening|side effects?|complications?|fever|systemic)\w*"
)


@dataclass(frozen=True)
class EmLevel:
    """A suggested office E/M code with the MDM elements (or time) that decided it."""

    code: str
    level: int
    is_new: bool
    message: str
    elements: tuple[tuple[int, int, str], ...] = field(default_factory=tuple)
    problems: int = 1
    data: int = 1
    risk: int = 1
    time_minutes: int | None = None


@dataclass
class _Problem:
    start: int
    end: int
    kind: str


def _rx(patterns: Mapping[str, Any], key: str) -> re.Pattern[str]:
    return re.compile(r"(?<![a-z0-9])(?:" + patterns[key] + r")(?![a-z0-9])", re.I)


def _assessment_items(text: str, rules: Mapping[str, Any]) -> list[tuple[int, int]]:
    """Spans of the problems in the assessment/plan: numbered lines, else the section's first line."""
    heading_re = re.compile(r"^(?:" + rules["assessment_headings"] + r")$", re.I)
    items: list[tuple[int, int]] = []
    in_section = False
    pos = 0
    section_lines: list[tuple[int, int]] = []
    for raw in text.split("\n"):
        start, end = pos, pos + len(raw)
        pos = end + 1
        m = LINE_HEADING.match(raw)
        if m:
            label = m.group(1).strip()
            if heading_re.match(label):
                in_section = True
                rest = raw[m.end() :].strip()
                if rest:
                    section_lines.append((start + m.end(), end))
                continue
            if in_section and not NUMBERED.match(raw):
                in_section = False
        if in_section and raw.strip():
            if NUMBERED.match(raw):
                items.append((start, end))
            else:
                section_lines.append((start, end))
    if items:
        return items
    return section_lines[:1]


def _classify(item: str, rules: Mapping[str, Any]) -> str | None:
    p = rules["problem"]
    body = NUMBERED.sub("", item).strip().lower()
    if re.search(p["not_a_problem"], body):
        return None
    head = re.split(r"\s[-\u2013]\s|:|;|\.\s", body, maxsplit=1)
    status = NEGATED_STATUS.sub(" ", body)
    if re.search(p["high"], status):
        return "high"
    is_chronic = bool(re.search(p["chronic"], head[0] if head else body)) or bool(re.search(r"chronic", status))
    if is_chronic and re.search(p["chronic_worse"], status):
        return "chronic_worse"
    if re.search(p["undiagnosed"], status):
        return "undiagnosed"
    if is_chronic:
        return "chronic"
    if re.search(p["acute_complicated"], status):
        return "acute_complicated"
    if re.search(p["acute_systemic"], status):
        return "acute_systemic"
    if re.search(p["minor"], status):
        return "minor"
    return "acute"


def _problem_level(problems: list[_Problem]) -> tuple[int, str]:
    kinds = [p.kind for p in problems]
    if "high" in kinds:
        return 4, "1 problem posing a threat to life or bodily function / severe exacerbation"
    if "chronic_worse" in kinds:
        return 3, "chronic illness with exacerbation or progression"
    if kinds.count("chronic") >= 2:
        return 3, f"{kinds.count('chronic')} stable chronic illnesses"
    if "undiagnosed" in kinds:
        return 3, "undiagnosed new problem with uncertain prognosis"
    if "acute_systemic" in kinds:
        return 3, "acute illness with systemic symptoms"
    if "acute_complicated" in kinds:
        return 3, "acute complicated injury"
    if "chronic" in kinds:
        return 2, "1 stable chronic illness"
    if "acute" in kinds:
        return 2, "acute uncomplicated illness or injury"
    if kinds.count("minor") >= 2:
        return 2, "2 or more self-limited problems"
    return 1, "1 self-limited or minor problem"


def suggest_em_level(text: str, rules: Mapping[str, Any]) -> EmLevel | None:
    """Office E/M suggestion for one outpatient note, or None (preventive or procedure-only visit).

    `rules` is the parsed `nlp/resources/services/em.json`.
    """
    low = text.lower()
    head = low[:400]
    if any(re.search(p, head) for p in rules["skip_visit"]):
        return None
    elements: list[tuple[int, int, str]] = []

    is_new = False
    new_m = re.search("|".join(rules["new_patient"]), low)
    est_m = re.search("|".join(rules["established_patient"]), low)
    if new_m and not (est_m and est_m.start() < new_m.start() and "established patient" in est_m.group(0)):
        is_new = True
        elements.append((new_m.start(), new_m.end(), "new patient"))

    # Problems addressed.
    problems: list[_Problem] = []
    for start, end in _assessment_items(text, rules):
        kind = _classify(text[start:end], rules)
        if kind is not None:
            problems.append(_Problem(start, end, kind))
    if not problems:
        return None
    problem_level, problem_why = _problem_level(problems)
    for p in problems[:4]:
        elements.append((p.start, p.end, f"problem: {p.kind.replace('_', ' ')}"))

    # Data reviewed/ordered: unique tests, external notes, independent historian, interpretation, discussion.
    d = rules["data"]
    tests_re, ordered_re, reviewed_re = _rx(d, "tests"), _rx(d, "ordered"), _rx(d, "reviewed")
    ordered: set[str] = set()
    reviewed: set[str] = set()
    for sm in re.finditer(r"[^.\n;]+", text):
        sentence = sm.group(0)
        tests = {t.group(0).lower() for t in tests_re.finditer(sentence)}
        if not tests:
            continue
        if ordered_re.search(sentence):
            new = tests - ordered - reviewed
            if new:
                ordered |= new
                elements.append((sm.start(), sm.end(), "data: tests ordered"))
        elif reviewed_re.search(sentence):
            new = tests - ordered - reviewed
            if new:
                reviewed |= new
                elements.append((sm.start(), sm.end(), "data: results reviewed"))
    category1 = len(ordered) + len(reviewed)
    for key, label in (
        ("external_notes", "external notes reviewed"),
        ("independent_historian", "independent historian"),
    ):
        m = _rx(d, key).search(text)
        if m:
            category1 += 1
            elements.append((m.start(), m.end(), f"data: {label}"))
    historian = bool(_rx(d, "independent_historian").search(text))
    interp = _rx(d, "independent_interpretation").search(text)
    discussion = _rx(d, "discussion").search(text)
    if interp:
        elements.append((interp.start(), interp.end(), "data: independent interpretation"))
    if discussion:
        elements.append((discussion.start(), discussion.end(), "data: discussion with external physician"))
    cat1_moderate = category1 >= 3
    satisfied = sum((cat1_moderate, bool(interp), bool(discussion)))
    if satisfied >= 2:
        data_level = 4
    elif satisfied == 1:
        data_level = 3
    elif category1 >= 2 or historian:
        data_level = 2
    else:
        data_level = 1
    data_why = f"{len(ordered)} test(s) ordered, {len(reviewed)} reviewed"

    # Risk of management.
    r = rules["risk"]
    risk_level, risk_why = 1, "minimal"
    high_re, cond_re = _rx(r, "high"), _rx(r, "high_conditional")
    rx_verbs, rx_drugs = _rx(r, "rx_verbs"), _rx(r, "rx_drugs")
    for sm in re.finditer(r"[^.\n;]+", text):
        sentence = sm.group(0)
        hm = high_re.search(sentence)
        if hm and not cond_re.search(sentence):
            risk_level, risk_why = 4, "decision regarding hospitalization / high-risk management"
            elements.append((sm.start(), sm.end(), "risk: high"))
            break
        if risk_level < 3 and rx_verbs.search(sentence) and rx_drugs.search(sentence):
            risk_level, risk_why = 3, "prescription drug management"
            elements.append((sm.start(), sm.end(), "risk: prescription drug management"))
    if risk_level < 3:
        sdoh = _rx(r, "sdoh").search(text)
        if sdoh:
            risk_level, risk_why = 3, "social determinants of health limiting diagnosis or treatment"
            elements.append((sdoh.start(), sdoh.end(), "risk: social determinants"))
    if risk_level < 2:
        m = _rx(r, "otc_only").search(text) or _rx(r, "minor_surgery").search(text)
        if m:
            risk_level, risk_why = 2, "over-the-counter drugs or minor procedure"
            elements.append((m.start(), m.end(), "risk: low"))

    levels = sorted((problem_level, data_level, risk_level), reverse=True)
    mdm = levels[1]
    deciding = [
        name for name, lv in (("problems", problem_level), ("data", data_level), ("risk", risk_level)) if lv >= mdm
    ][:2]

    # Total time, when documented.
    minutes: int | None = None
    for pattern in rules["time"]:
        tm = re.search(pattern, low)
        if tm:
            minutes = int(tm.group(1))
            elements.append((tm.start(), tm.end(), f"total time {minutes} min"))
            break
    time_level = 0
    if minutes is not None:
        for threshold, lv in rules["time_minutes"]["new" if is_new else "established"]:
            if minutes >= threshold:
                time_level = lv

    level = max(mdm, time_level, 1)
    kind = "new" if is_new else "established"
    code = rules["codes"][kind][str(level)]
    if time_level > mdm:
        message = f"{code} ({kind} patient): decided by total time {minutes} min; MDM alone would be {LEVEL_NAMES[mdm]}"
    else:
        message = (
            f"{code} ({kind} patient): MDM {LEVEL_NAMES[mdm]}, decided by {' + '.join(deciding)} - "
            f"problems {LEVEL_NAMES[problem_level]} ({problem_why}), data {DATA_NAMES[data_level]} ({data_why}), "
            f"risk {RISK_NAMES[risk_level]} ({risk_why})"
        )
        if minutes is not None:
            message += f"; total time {minutes} min"
    return EmLevel(
        code=code,
        level=level,
        is_new=is_new,
        message=message,
        elements=tuple(sorted(set(elements))),
        problems=problem_level,
        data=data_level,
        risk=risk_level,
        time_minutes=minutes,
    )
