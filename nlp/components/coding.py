"""From asserted mentions to candidate codes: assertion policy by setting, history and family codes,
long-term drug use, value rules (BMI, weeks of gestation), billable specificity, combination codes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nlp.components.state import Finding, NoteState, Span
from nlp.rules import guidelines as g
from nlp.rules.codetree import CodeTree
from nlp.types import Excluded, Flag

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
DEFINITIVE_SECTIONS = ("assessment", "course", "indication", "findings", "problem_list")


class Coder:
    name = "coding"
    requires: tuple[str, ...] = ("assertions", "sections")
    assigns: tuple[str, ...] = ("findings", "excluded")

    def __init__(self, tree: CodeTree, rules: Mapping[str, Any], history_table: Sequence[Mapping[str, str]]) -> None:
        self.tree = tree
        self.rules = rules
        self.history_table = history_table

    # ---- helpers ------------------------------------------------------------------------
    def _add(self, state: NoteState, code: str, spans: Sequence[Span], rule: str = "",
             flags: Sequence[Flag] = ()) -> None:
        if code not in self.tree or not self.tree.is_billable(code):
            return
        f = state.findings.get(code)
        if f is None:
            f = state.findings[code] = Finding(code=code, spans=[], rule=rule)
        for s in spans:
            if all((s.start, s.end) != (x.start, x.end) for x in f.spans):
                f.spans.append(s)
        for fl in flags:
            if fl not in f.flags:
                f.flags.append(fl)
        if rule and not f.rule:
            f.rule = rule

    def _exclude(self, state: NoteState, span: Span, reason: str) -> None:
        state.excluded.append(Excluded(span.text, span.start, span.end, reason, span.codes))

    def _context(self, state: NoteState, span: Span) -> str:
        s, e = span.sentence
        return state.text[s:e] if e > s else span.text

    # ---- stages -------------------------------------------------------------------------
    def __call__(self, state: NoteState) -> None:
        setting = state.request.setting
        for span in state.spans:
            if span.source == "medication":
                self._medication(state, span)
            elif span.source == "pattern":
                self._pattern(state, span)
            else:
                self._condition(state, span, setting)
        self._drop_less_specific(state)
        self._diabetes(state)
        self._hypertension(state)
        self._value_dependencies(state)

    def _medication(self, state: NoteState, span: Span) -> None:
        if span.assertion in ("negated", "hypothetical", "family", "uncertain") or span.section_kind == "allergies":
            self._exclude(state, span, span.assertion if span.assertion != "present" else "hypothetical")
            return
        context = self._context(state, span).lower()
        cues = self.rules["new_medication_cues"]
        if span.section_kind != "medications" and any(cue in context for cue in cues):
            # A drug started, given once or stopped today is not long-term use.
            return
        self._add(state, span.codes[0], [span], rule="long_term_drug_use",
                  flags=[Flag("status", "long-term (current) drug use from the medication list")])

    def _pattern(self, state: NoteState, span: Span) -> None:
        if span.assertion in ("negated", "hypothetical", "family", "uncertain"):
            self._exclude(state, span, span.assertion)
            return
        if span.codes:
            self._add(state, span.codes[0], [span], rule="pattern")
            return
        numbers = _NUMBER.findall(span.value)
        if not numbers:
            return
        value = float(numbers[0])
        kind = span.key
        if kind.startswith("bmi"):
            code = g.bmi_code(value, state.request.patient.age, percentile=kind == "bmi_pediatric")
            if code:
                self._add(state, code, [span], rule="bmi")
        elif kind.startswith("gestational_weeks"):
            code = g.gestation_code(int(value))
            if code:
                self._add(state, code, [span], rule="gestation")

    def _condition(self, state: NoteState, span: Span, setting: str) -> None:
        if not span.codes:
            return
        code = span.codes[0]
        a = span.assertion
        if a == "negated" or a == "hypothetical":
            self._exclude(state, span, a)
            return
        if a == "family":
            self._exclude(state, span, "family")
            fh = g.history_code(code, self.history_table, family=True)
            if fh:
                self._add(state, fh, [span], rule="family_history",
                          flags=[Flag("family_history", "family history code; the disease itself is not coded")])
            return
        if a == "uncertain":
            if setting == "inpatient" and span.section_kind in DEFINITIVE_SECTIONS:
                flags = [Flag("uncertain_inpatient", "uncertain diagnosis at discharge coded as if established")]
                self._code(state, span, code, flags)
            else:
                self._exclude(state, span, "uncertain")
            return
        if a == "historical" and not g.is_chronic(code, self.rules):
            if code.startswith("C") and self._cancer_active(state, span):
                self._code(state, span, code, [])
                return
            # Z-codes (status, history) already say "history"; anything else becomes personal history.
            if code.startswith("Z") or code == "I25.2":
                self._code(state, span, code, [])
                return
            self._exclude(state, span, "historical")
            ph = g.history_code(code, self.history_table, family=False)
            if ph:
                self._add(state, ph, [span], rule="personal_history",
                          flags=[Flag("personal_history", "resolved condition coded as personal history")])
            return
        self._code(state, span, code, [])

    def _cancer_active(self, state: NoteState, span: Span) -> bool:
        context = self._context(state, span).lower()
        cues = self.rules["active_cancer_cues"]
        if any(c in context for c in cues):
            return True
        # A hormonal or cytotoxic drug on the medication list means the cancer is still being treated.
        return any(s.source == "medication" and s.codes and s.codes[0] in ("Z79.810", "Z79.811", "Z79.631")
                   and s.assertion == "present" for s in state.spans)

    def _code(self, state: NoteState, span: Span, code: str, flags: list[Flag]) -> None:
        billable = g.specify(self.tree, code, span.text + " " + self._context(state, span), self.rules)
        if billable is None:
            return
        if billable != code and not self.tree.is_billable(code):
            flags = [*flags, Flag("specificity", f"{code} is a category; coded to {billable}")]
        self._add(state, billable, [span], flags=flags)

    def _drop_less_specific(self, state: NoteState) -> None:
        """Keep the most specific code of a category: N18.9 goes when N18.4 is documented."""

        def generic(code: str) -> bool:
            info = self.tree.codes.get(code)
            parent = info.parent if info else None
            return "unspecified" in self.tree.description(code).lower() or (
                parent is not None and self.tree.default_child(parent) == code and code.endswith("9"))

        for c in list(state.findings):
            if not generic(c):
                continue
            specific = [o for o in state.findings if o != c and o[:3] == c[:3] and not generic(o)]
            if not specific:
                continue
            target = state.findings[specific[0]]
            target.spans.extend(s for s in state.findings[c].spans if s not in target.spans)
            del state.findings[c]

    def _diabetes(self, state: NoteState) -> None:
        diabetic = [c for c in state.findings if c[:3] in self.rules["diabetes_categories"]]
        if not diabetic:
            return
        base = next((c for c in diabetic if c.endswith(".9")), diabetic[0])
        combined_any = False
        for other in list(state.findings):
            if other[:3] in self.rules["diabetes_categories"] or other not in state.findings:
                continue
            combo = g.diabetes_combination(base, other, self.rules, self.tree)
            if combo is None:
                continue
            code, keep = combo
            spans = state.findings[base].spans + state.findings[other].spans
            self._add(state, code, spans, rule="diabetes_combination",
                      flags=[Flag("combination", "diabetes and complication presumed linked (\"with\" convention)")])
            combined_any = True
            if not keep:
                del state.findings[other]
        if combined_any:
            for c in diabetic:
                if c.endswith(".9") and c in state.findings:
                    del state.findings[c]

    def _hypertension(self, state: NoteState) -> None:
        htn = [c for c in state.findings if c in self.rules["hypertension_codes"]]
        if not htn:
            return
        ckd = [c for c in state.findings if c.startswith("N18")]
        hf = [c for c in state.findings if c.startswith("I50")]
        late = any(c in self.rules["ckd_late_stages"] for c in ckd)
        code = g.hypertension_combination(bool(ckd), late, bool(hf), self.rules)
        if code is None:
            return
        spans = [s for c in htn + ckd + hf for s in state.findings[c].spans]
        self._add(state, code, spans, rule="hypertension_combination",
                  flags=[Flag("combination", "hypertension with CKD/heart failure presumed linked")])
        for c in htn:
            del state.findings[c]
        # Existing I11/I12/I13 picked from text give way to the one the documented parts require.
        for c in list(state.findings):
            if c != code and c[:3] in ("I11", "I12", "I13"):
                del state.findings[c]

    def _value_dependencies(self, state: NoteState) -> None:
        """BMI is reported only with a weight diagnosis; weeks of gestation only with a pregnancy."""
        weight_dx = ("E66", "R63.5", "E44", "E43", "R63.6", "Z71.3", "E88.81")
        has_weight_dx = any(c.startswith(weight_dx) for c in state.findings)
        has_pregnancy = any(c.startswith(("O", "Z34", "Z37", "Z39")) for c in state.findings)
        for c in list(state.findings):
            if c.startswith("Z68") and not has_weight_dx:
                del state.findings[c]
            elif c.startswith("Z3A") and not has_pregnancy:
                del state.findings[c]
