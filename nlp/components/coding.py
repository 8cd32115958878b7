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
        self._short_course = [re.compile(p) for p in rules["short_course_patterns"]]

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
        self._pairs(state)
        self._drop_less_specific(state)
        self._diabetes(state)
        self._hypertension(state)
        self._drop_generic_words(state)
        self._refine_qualifiers(state)
        self._value_dependencies(state)
        self._external_causes(state)
        self._encounter_findings(state)

    def _medication(self, state: NoteState, span: Span) -> None:
        if span.assertion in ("negated", "hypothetical", "family", "uncertain") or span.section_kind == "allergies":
            self._exclude(state, span, span.assertion if span.assertion != "present" else "hypothetical")
            return
        context = self._context(state, span).lower()
        if span.section_kind != "medications":
            if any(cue in context for cue in self.rules["new_medication_cues"]) or any(
                    r.search(context) for r in self._short_course):
                # A drug started, given once, or given for a short course is not long-term use.
                return
            if span.section_kind in ("plan", "course", "procedures") and not any(
                    cue in context for cue in self.rules["continuing_medication_cues"]):
                return
        self._add(state, span.codes[0], [span], rule="long_term_drug_use",
                  flags=[Flag("status", "long-term (current) drug use from the medication list")])

    def _pattern(self, state: NoteState, span: Span) -> None:
        if span.assertion in ("negated", "hypothetical", "family", "uncertain"):
            self._exclude(state, span, span.assertion)
            return
        if span.codes:
            code = self._code(state, span, span.codes[0], [])
            if code and not state.findings[code].rule:
                state.findings[code].rule = "pattern"
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
        elif kind == "blood_alcohol":
            self._add(state, g.blood_alcohol_code(value), [span], rule="blood_alcohol")
        elif kind.startswith("gestational_weeks"):
            code = g.gestation_code(int(value))
            if code:
                self._add(state, code, [span], rule="gestation")

    def _condition(self, state: NoteState, span: Span, setting: str) -> None:
        if not span.codes:
            return
        code = span.codes[0]
        a = span.assertion
        if a == "present" and not code.startswith("Z") and self._describes_allergy(state, span):
            # "Penicillin allergy (anaphylaxis)": the reaction is the allergy's history, not a current problem.
            a = "historical"
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
        if a == "historical":
            chronic = g.is_chronic(code, self.rules) and not span.is_resolved
            active_cancer = code.startswith("C") and not span.is_resolved and self._cancer_active(state, span)
            if chronic or active_cancer:
                self._code(state, span, code, [])
                return
            ph = g.history_code(code, self.history_table, family=False)
            if ph:
                self._exclude(state, span, "historical")
                self._add(state, ph, [span], rule="personal_history",
                          flags=[Flag("personal_history", "resolved condition coded as personal history")])
                return
            # Status codes (Z95.1 bypass graft, I25.2 old MI) already describe the past.
            if code.startswith("Z") or code == "I25.2":
                self._code(state, span, code, [])
                return
            self._exclude(state, span, "historical")
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

    def _code(self, state: NoteState, span: Span, code: str, flags: list[Flag]) -> str | None:
        code = self._sex_consistent(state, span, code)
        billable = g.specify(self.tree, code, span.text + " " + self._context(state, span), self.rules)
        if billable is None:
            return None
        if billable != code and not self.tree.is_billable(code):
            flags = [*flags, Flag("specificity", f"{code} is a category; coded to {billable}")]
        self._add(state, billable, [span], flags=flags)
        return billable if billable in state.findings else None

    def _sex_consistent(self, state: NoteState, span: Span, code: str) -> str:
        """Among a phrase's codes, the first whose wording fits the patient's sex (female vs male breast)."""
        sex = state.request.patient.sex
        if sex not in ("female", "male"):
            return code
        other = "male" if sex == "female" else "female"
        for c in span.codes:
            if other not in self.tree.description(c).lower().replace(",", " ").split():
                return c
        return code

    @staticmethod
    def _documented(state: NoteState) -> list[str]:
        """Codes with evidence the dictionary or a pattern found. A code only the encoder linked is a weak
        guess: it is suggested on its own (scored low) but never rewrites another code into a more specific
        or a combination code."""
        return [c for c, f in state.findings.items() if not f.similarity_only]

    def _drop_less_specific(self, state: NoteState) -> None:
        """Keep the most specific code of a category: N18.9 goes when N18.4 is documented."""

        def generic(code: str) -> bool:
            return "unspecified" in self.tree.description(code).lower()

        documented = self._documented(state)
        for c in list(state.findings):
            if not generic(c):
                continue
            specific = [o for o in documented if o != c and o in state.findings and o[:3] == c[:3] and not generic(o)]
            if not specific:
                continue
            target = state.findings[specific[0]]
            target.spans.extend(s for s in state.findings[c].spans if s not in target.spans)
            del state.findings[c]

    def _diabetes(self, state: NoteState) -> None:
        documented = self._documented(state)
        diabetic = [c for c in documented if c[:3] in self.rules["diabetes_categories"]]
        if not diabetic:
            return
        base = next((c for c in diabetic if c.endswith(".9")), diabetic[0])
        combined_any = False
        for other in documented:
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
        documented = self._documented(state)
        htn = [c for c in documented if c in self.rules["hypertension_codes"]]
        if not htn:
            return
        ckd = [c for c in documented if c.startswith("N18")]
        hf = [c for c in documented if c.startswith("I50")]
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
        documented = self._documented(state)
        has_weight_dx = any(c.startswith(weight_dx) for c in documented)
        has_pregnancy = any(c.startswith(("O", "Z34", "Z37", "Z39")) for c in documented)
        for c in list(state.findings):
            if c.startswith("Z68") and not has_weight_dx:
                del state.findings[c]
            elif c.startswith("Z3A") and not has_pregnancy:
                del state.findings[c]

    def _pairs(self, state: NoteState) -> None:
        """Index "with" combinations (resources/rules.json "pairs"): two documented conditions that the
        classification codes together (hydronephrosis with ureteral calculus -> N13.2)."""
        for rule in self.rules["pairs"]:
            first, second = rule["all_of"]
            documented = self._documented(state)
            a = next((c for c in documented if self.tree.is_under(c, first)), None)
            b = next((c for c in documented if self.tree.is_under(c, second) and c != a), None)
            if a is None or b is None:
                continue
            if any(any(self.tree.is_under(c, u) for c in state.findings) for u in rule.get("unless", ())):
                continue
            spans = state.findings[a].spans + state.findings[b].spans
            if rule.get("keep_second"):
                code = b
            elif "substitute" in rule:
                old, new = rule["substitute"]
                code = new + b.replace(".", "")[len(old.replace(".", "")):]
                code = f"{code[:3]}.{code[3:]}" if "." not in code else code
                code = code.replace(".", "", 1) if code.count(".") > 1 else code
            else:
                code = rule["code"]
            if rule.get("lateral"):
                context = " ".join(state.text[s.sentence[0]:s.sentence[1]] for s in spans)
                code = g.specify(self.tree, code, context, self.rules) or ""
            elif not self.tree.is_billable(code):
                code = g.specify(self.tree, code, " ".join(s.text for s in spans), self.rules) or ""
            if not code:
                continue
            for c in list(state.findings):
                if c != code and any(self.tree.is_under(c, d) for d in rule.get("drop", ())) and c in (a, b):
                    spans_c = state.findings.pop(c).spans
                    spans.extend(x for x in spans_c if x not in spans)
            self._add(state, code, spans, rule="combination",
                      flags=[Flag("combination", rule.get("label", "combination code"))])

    def _encounter_findings(self, state: NoteState) -> None:
        """Other conditions found at a routine exam turn it into the exam "with abnormal findings";
        the newborn's own Z38 code never goes on the mother's delivery record; one gestational age."""
        swap = self.rules["encounter_with_findings"]
        others = [c for c in state.findings if not c.startswith("Z")]
        for plain, abnormal in swap.items():
            if plain in state.findings and others and abnormal in self.tree:
                f = state.findings.pop(plain)
                self._add(state, abnormal, f.spans, rule=f.rule,
                          flags=[Flag("encounter", "routine exam with abnormal findings")])
        if any(c.startswith("O") or c.startswith("Z37") for c in state.findings):
            for c in [c for c in state.findings if c.startswith("Z38")]:
                del state.findings[c]
        weeks = sorted(c for c in state.findings if c.startswith("Z3A"))
        for c in weeks[:-1]:
            del state.findings[c]

    def _describes_allergy(self, state: NoteState, span: Span) -> bool:
        return any(o is not span and o.codes and o.codes[0].startswith("Z88") and o.sentence == span.sentence
                   for o in state.spans)

    def _drop_generic_words(self, state: NoteState) -> None:
        """A one-word mention ("abscess", "pancreatitis") gives way to a finding whose own evidence names
        the same thing more specifically ("periapical abscess", "alcohol-induced pancreatitis")."""
        documented = set(self._documented(state))
        for c in list(state.findings):
            f = state.findings.get(c)
            if f is None or f.rule or any(len(g.words(s.text)) != 1 for s in f.spans):
                continue
            word = g.words(f.spans[0].text)[0]
            for o, other in state.findings.items():
                if o == c or o not in documented:
                    continue
                named = any(word in g.words(s.text) and len(g.words(s.text)) > 1 for s in other.spans)
                if named or word in g.words(self.tree.description(o)):
                    other.spans.extend(s for s in f.spans if s not in other.spans)
                    del state.findings[c]
                    break

    def _refine_qualifiers(self, state: NoteState) -> None:
        """"..., unspecified" becomes the sibling whose last qualifier the evidence states
        ("alcohol dependence with intoxication, uncomplicated" -> F10.220, not F10.229)."""
        for c in list(state.findings):
            desc = self.tree.description(c)
            if not desc.lower().endswith(", unspecified"):
                continue
            info = self.tree.codes.get(c)
            if info is None or not info.parent:
                continue
            f = state.findings[c]
            context = " ".join(state.text[s.sentence[0]:s.sentence[1]] for s in f.spans).lower()
            ctx_words = " " + " ".join(g.words(context)) + " "
            for sib in self.tree.children.get(info.parent, []):
                sdesc = self.tree.description(sib)
                if sib == c or "," not in sdesc or sdesc.rsplit(",", 1)[0] != desc.rsplit(",", 1)[0]:
                    continue
                qualifier = " ".join(g.words(sdesc.rsplit(",", 1)[1]))
                if qualifier and f" {qualifier} " in ctx_words and self.tree.is_billable(sib):
                    state.findings.pop(c)
                    self._add(state, sib, f.spans, rule=f.rule, flags=f.flags)
                    break

    def _external_causes(self, state: NoteState) -> None:
        """External-cause codes (mechanism V/W/X, place Y92, activity Y93) only accompany an injury; one
        place and one activity; the status (Y99) follows the mechanism. Blood alcohol (Y90) only with an
        alcohol-related code."""
        injured = any(c[0] in "ST" and not ("T36" <= c[:3] <= "T50") for c in state.findings)
        external = [c for c in state.findings if c[0] in "VWXY" and not c.startswith("Y90")]
        if not injured:
            for c in external:
                del state.findings[c]
        else:
            for prefix in ("Y92", "Y93"):
                same = sorted((c for c in external if c.startswith(prefix)),
                              key=lambda c: min(s.start for s in state.findings[c].spans))
                for c in same[1:]:
                    del state.findings[c]
            mechanisms = [c for c in state.findings if c[0] in "VWX"]
            if mechanisms:
                spans = state.findings[mechanisms[0]].spans
                text = " ".join(state.text[s.sentence[0]:s.sentence[1]] for s in spans).lower()
                status = self.rules["external_cause_status"]
                code = status["default_code"]
                if any(cue in text for cue in status["work"]):
                    code = status["work_code"]
                elif any(cue in text for cue in status["military"]):
                    code = status["military_code"]
                self._add(state, code, spans, rule="pattern",
                          flags=[Flag("external_cause", "external cause status follows the mechanism")])
        if not any(c.startswith("F10") for c in state.findings):
            for c in [c for c in state.findings if c.startswith("Y90")]:
                del state.findings[c]
