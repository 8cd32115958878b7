"""Scores, Excludes1, order and evidence: findings become ranked suggestions.

`score` estimates the probability that a coder accepts the code. It is a transparent heuristic over
where the evidence sits (an Assessment/Diagnoses line is the strongest signal), how it was matched,
which rule produced the code and how often it is documented; docs/EVALUATION.md reports its
calibration on the development set. Order: codes listed in Assessment / Discharge Diagnoses first, in
the order written (first-listed = principal), then the rest by score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nlp.components.state import Finding, NoteState
from nlp.rules import guidelines as g
from nlp.rules.codetree import CodeTree
from nlp.types import Evidence, Excluded, Flag, Suggestion

RULE_BASE = {
    "long_term_drug_use": 0.55,
    "personal_history": 0.45,
    "family_history": 0.35,
    "bmi": 0.55,
    "gestation": 0.6,
    "blood_alcohol": 0.55,
    "pattern": 0.55,
}
MAX_EVIDENCE = 6


def finding_score(f: Finding, rules: Mapping[str, Any]) -> float:
    """Heuristic probability of acceptance for one finding (see module docstring)."""
    sw, srcw = rules["section_weight"], rules["source_weight"]
    per_span = []
    for s in f.spans:
        base = sw.get(s.section_kind, sw["none"]) + srcw.get(s.source, 0.0)
        if s.source == "encoder":
            # A similarity link is only as good as the model's measured precision at its cosine.
            base = min(base, s.link_score)
        if s.assertion == "uncertain":
            base -= 0.1
        per_span.append(base)
    score = max(per_span) if per_span else 0.3
    if f.rule in RULE_BASE:
        score = max(RULE_BASE[f.rule], score if f.rule in ("pattern", "blood_alcohol") else 0.0)
        if f.rule == "family_history" and f.code.startswith("Z80"):
            # A family history of cancer changes screening and is routinely reported; others less so.
            score += 0.15
        if f.rule == "long_term_drug_use" and any(s.section_kind == "medications" for s in f.spans):
            score += 0.05
    if f.rule in ("diabetes_combination", "hypertension_combination"):
        score += 0.03
    if all(s.section_kind == "plan" for s in f.spans):
        # Plan lines are mostly what will be done or watched for, not what was found.
        score *= 0.6
    distinct = {(s.start, s.end) for s in f.spans}
    score += min(0.08, 0.04 * (len(distinct) - 1))
    return max(0.01, min(0.99, score))


class Ranker:
    name = "ranking"
    requires: tuple[str, ...] = ("findings",)
    assigns: tuple[str, ...] = ("suggestions",)

    def __init__(self, tree: CodeTree, rules: Mapping[str, Any], excludes1: Mapping[str, Sequence[str]],
                 threshold: float) -> None:
        self.tree = tree
        self.rules = rules
        self.excludes1 = excludes1
        self.threshold = threshold

    def score(self, state: NoteState) -> None:
        """Score findings, damp symptoms explained by a definitive diagnosis, then apply Excludes1."""
        for f in state.findings.values():
            f.score = finding_score(f, self.rules)
            # Only documented codes keep the assessment's order; a code the encoder alone linked is a guess and
            # ranks by its score.
            positions = [s.start for s in f.spans if s.section_kind == "assessment" and s.source != "encoder"]
            f.first_assessment_pos = min(positions) if positions else None
            if f.similarity_only and not any(x.kind == "similarity" for x in f.flags):
                f.flags.append(Flag("similarity", "linked by text similarity only; no index or dictionary term "
                                    "matched: check the code against the wording"))
        definitive = [f for f in state.findings.values()
                      if not f.code.startswith(("R", "Z")) and f.score >= 0.6]
        factor = self.rules["thresholds"]["symptom_with_definitive_dx_factor"]
        symptom_prefixes = tuple(self.rules["symptom_prefixes"])
        for f in state.findings.values():
            if not f.code.startswith(symptom_prefixes) or not definitive:
                continue
            # Signs and symptoms routine to a confirmed diagnosis are not coded (Guidelines I.B.5);
            # one the assessment lists as a problem of its own still is, unless a diagnosis shares its line.
            explained = f.first_assessment_pos is None or all(
                any(s.sentence == d.sentence for o in definitive for d in o.spans)
                for s in f.spans if s.section_kind == "assessment")
            if explained:
                f.score *= factor
        # Excludes1: the better-documented code (more distinct evidence, then score) stays; a code only the
        # encoder linked never pushes out one the dictionary or a pattern found.
        ordered = sorted(state.findings.values(),
                         key=lambda f: (f.similarity_only,
                                        -len({(s.start, s.end) for s in f.spans}), -f.score))
        kept: list[Finding] = []
        for f in ordered:
            clash = next((k for k in kept if g.excludes1_conflict(k.code, f.code, self.excludes1, self.tree)
                          or g.excludes1_conflict(f.code, k.code, self.excludes1, self.tree)), None)
            if clash is not None:
                state.excluded.extend(
                    Excluded(s.text, s.start, s.end, "excludes1", (f.code,)) for s in f.spans[:1])
                continue
            kept.append(f)
        state.findings = {f.code: f for f in kept}

    def suggestions(self, state: NoteState, max_suggestions: int) -> list[Suggestion]:
        """Ranked suggestions at or above the threshold, each with its evidence spans."""
        self.score(state)
        listed = [f for f in state.findings.values() if f.first_assessment_pos is not None]
        others = [f for f in state.findings.values() if f.first_assessment_pos is None]
        listed.sort(key=lambda f: (f.first_assessment_pos, -f.score))
        others.sort(key=lambda f: (-f.score, min(s.start for s in f.spans)))
        out: list[Suggestion] = []
        for f in listed + others:
            if f.score < self.threshold or not f.spans:
                continue
            evidence = []
            seen: set[tuple[int, int]] = set()
            for s in sorted(f.spans, key=lambda s: s.start):
                if (s.start, s.end) in seen:
                    continue
                seen.add((s.start, s.end))
                evidence.append(Evidence(s.start, s.end, state.text[s.start : s.end], s.section or "", s.assertion))
            evidence = evidence[:MAX_EVIDENCE]
            flags = tuple(f.flags)
            if f.code.startswith("R") and f.score < 0.3:
                flags += (Flag("symptom", "sign/symptom; check whether a confirmed diagnosis explains it"),)
            out.append(Suggestion("icd10cm", f.code, self.tree.description(f.code), round(f.score, 4),
                                  tuple(evidence), flags))
            if len(out) >= max_suggestions:
                break
        return out
