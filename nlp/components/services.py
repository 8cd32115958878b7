"""CPT suggestions: performed services, their quantities, and the office E/M level.

`ServiceDetector` reads a note with its own light sentence and tense analysis (regexes and small
tables in `nlp/resources/services/`), decides for each service mention whether it was performed at
this encounter, and turns performed services into CPT suggestions with evidence spans and
quantity flags. Planned, ordered, declined or deferred services go to `excluded`.

Professional-claim rules (the gold of the development set follows them): in the office the
practice's staff services count (vaccines and their administration, ECG tracing, venipuncture,
point-of-care tests); in the emergency department and the hospital only the physician's own
procedures count, so staff services are never suggested there.

E/M levels (99202-99215) come from `nlp.rules.em_level`; they are behind `suggest_em` and carry a
score of 0.05 so that they sort after every service code.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from nlp.rules.em_level import EmLevel, suggest_em_level
from nlp.types import CodeInfo, Evidence, Excluded, Flag, Section, Suggestion

RESOURCE_DIR = ("resources", "services")
RESOURCE_FILES = ("services.json", "cues.json", "lacerations.json", "vaccines.csv", "em.json")

# Assertion states, strongest first. A service mention takes the strongest state among the cues
# that reach it: a declined service stays declined even when "today" is also in the sentence.
NEGATED, EXTERNAL, HISTORICAL, PERFORMED, HYPOTHETICAL, WEAK_EXTERNAL, WEAK, NONE = range(8)
STATE_NAMES = ("negated", "external", "historical", "performed", "hypothetical", "external", "weak", "none")
EXCLUDED_REASON = {NEGATED: "negated", HISTORICAL: "historical", HYPOTHETICAL: "hypothetical"}

SCORE_STRONG = 0.92
SCORE_DEFAULT = 0.85
SCORE_WEAK = 0.8
REVIEW_PENALTY = 0.15
EM_SCORE = 0.05
MAX_EVIDENCE = 4

WORD = r"(?<![a-z0-9])(?:{})(?![a-z0-9])"
CLAUSE_BREAK = re.compile(r";|\s(?:but|however|although|whereas|except|while)\s|\.\s", re.I)
CHUNK_BREAK = re.compile(r",|;|\s(?:but|however|although|whereas|except|while)\s|\s-\s|:\s", re.I)
SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z(\"'\d])")
ABBREVIATIONS = ("dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "st", "no", "pt", "fig", "sr", "jr")
HEADING = re.compile(r"^\s*(?:[-*\u2022]\s*)?([a-z][a-z0-9 /&'+-]{0,48}?)\s*(?::|\s-\s|\s\u2014\s|\(|$)")
NUMBERED_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022])\s+")
SIDE = re.compile(r"(?<![a-z])(right|left|bilateral|both|r|l)(?![a-z])")
LENGTH = re.compile(
    r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:(?:x|by)\s*(\d+(?:\.\d+)?)\s*)?[- ]?(cm|centimeters?|mm|millimeters?)(?![a-z])"
)
AGE_YEARS = re.compile(
    r"(?<![a-z0-9])(?:age[:\s]+(\d{1,3})(?!\s*(?:months?|mos?|weeks?|days?))"
    r"|(\d{1,3})[- ]?(?:years?[- ]old|y/?o|yrs?\b|y\b))"
)
AGE_INFANT = re.compile(r"(?<![a-z0-9])(?:age[:\s]+)?\d{1,2}[- ]?(?:months?|mos?|weeks?|wks?|days?)[- ]?(?:old)?\b")
VACCINE_CONTEXT = re.compile(
    r"vaccin|immuniz|\bshot\b|booster|\bdose\b|\bim\b|intramuscular|subcutaneous|\bsc\b|\bsq\b|\d ?ml\b|\blot\b|\bvis\b"
)
VACCINE_PERFORMED = re.compile(r"\d(?:\.\d+)? ?ml\b|\blot\b|\bvis (?:given|provided)|(?:\bim\b|intramuscular)(?![a-z])")
ECG_RESULT = re.compile(
    r"sinus|rhythm|axis|\bst[- ]|qrs|qtc|\bpr\b|bradycardia|tachycardia|fibrillation|flutter|\bblock\b|"
    r"no (?:acute )?(?:ischemic )?changes|q waves|lvh|normal ecg|normal ekg|paced"
)
DATE_TOKEN = re.compile(r"(?P<iso>(?:19|20)\d\d-\d\d-\d\d)|(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>(?:19|20)?\d\d)")
PHRASE_BREAK = re.compile(r",|;|\s(?:and|plus|as well as)\s")
ECG_MONITORING = re.compile(r"monitor|telemetry|rhythm strip|continuous|leads? (?:placed|applied)|cardiac monitoring")
ECG_DONE = re.compile(
    r"done|performed|obtained|today|in (?:the )?(?:office|clinic)|in-office|here|by me|my (?:interpretation|read)|"
    r"12[- ]lead|tracing|was (?:taken|recorded)|independently interpreted"
)
IMAGING_HERE = re.compile(
    r"today|in (?:the )?(?:office|clinic)|in-office|here|by me|my (?:interpretation|read)|i (?:personally )?"
    r"(?:interpreted|read)"
)
OPERATIVE_NOTE = re.compile(
    r"pre-?operative diagnos[ie]s|post-?operative diagnos[ie]s|operative (?:report|note)|operating room"
)
OPERATIVE_PROCEDURE = re.compile(
    r"(?:procedures? performed|name of (?:the )?(?:procedure|operation)|operations? performed|procedures?|operations?)"
    r"\s*:"
)
FRACTURE = re.compile(r"fracture|\bfx\b")


@cache
def _read_resource(name: str) -> str:
    return resources.files("nlp").joinpath(*RESOURCE_DIR, name).read_text(encoding="utf-8")


def load_rules() -> dict[str, Any]:
    """The service rules (`services.json`), cues, laceration tables and vaccines as plain data."""
    vaccines = list(csv.DictReader(io.StringIO(_read_resource("vaccines.csv"))))
    return {
        "services": json.loads(_read_resource("services.json")),
        "cues": json.loads(_read_resource("cues.json")),
        "lacerations": json.loads(_read_resource("lacerations.json")),
        "vaccines": vaccines,
    }


def rules_version() -> str:
    """Content hash of the service rule files, for the audit record."""
    digest = hashlib.sha256()
    for name in RESOURCE_FILES:
        digest.update(name.encode())
        digest.update(_read_resource(name).encode())
    return "services-" + digest.hexdigest()[:12]


def _alt(patterns: Sequence[str]) -> str:
    return "|".join(sorted(patterns, key=len, reverse=True))


def _word_re(patterns: Sequence[str] | str) -> re.Pattern[str]:
    body = patterns if isinstance(patterns, str) else _alt(patterns)
    return re.compile(WORD.format(body))


# --------------------------------------------------------------------------------------------
# Note analysis: lines, headings, sentences, clauses and assertion cues
# --------------------------------------------------------------------------------------------


@dataclass
class _Sentence:
    start: int
    end: int
    line: int
    para: int
    heading: str
    heading_line: int
    cues: list[tuple[int, int, int, str]] = field(default_factory=list)  # (start, end, state, direction)


@dataclass(frozen=True)
class _Assessment:
    state: int
    cue: tuple[int, int] | None = None


class _Cues:
    """Compiled cue tables (one per detector)."""

    def __init__(self, cues: dict[str, Any]) -> None:
        self.tables: list[tuple[int, str, re.Pattern[str]]] = []
        for state, key in ((NEGATED, "negated"), (HYPOTHETICAL, "hypothetical"), (HISTORICAL, "historical")):
            for direction, patterns in cues[key].items():
                self.tables.append((state, direction, _word_re(patterns)))
        for direction, patterns in cues["performed"].items():
            self.tables.append((PERFORMED, direction, _word_re(patterns)))
        strong_external = [p for p in cues["external"] if "reviewed" not in p and "per (" not in p]
        weak_external = [p for p in cues["external"] if p not in strong_external]
        self.tables.append((EXTERNAL, "both", _word_re(strong_external)))
        self.tables.append((WEAK_EXTERNAL, "both", _word_re(weak_external)))
        self.tables.append((WEAK, "both", _word_re(cues["weak_performed"])))
        self.negated_pre_max_words = int(cues.get("negated_pre_max_words", 4))
        self.short_negations = re.compile(r"^(?:no|not|without|never)$")
        self.pseudo = _word_re(
            [
                r"no (?:immediate |apparent |acute )?(?:complications?|adverse (?:events?|reactions?)|bleeding|"
                r"difficulty|issues?|problems?|evidence|change|changes|residual|recurrence|pain|distress|"
                r"paresthesias?|resistance|concerns?)",
                r"without (?:complications?|difficulty|incident|issue|event|paresthesias?|resistance)",
                r"not only",
                r"no (?:known )?drug allergies",
            ]
        )
        self.sentence_hypothetical = re.compile("|".join(cues["hypothetical_sentence"]))
        self.in_house = _word_re(cues["in_house"])
        self.first_person = re.compile("|".join(cues["first_person"]))
        self.counsel_physician = re.compile("|".join(cues["counseling_by_physician"]))
        self.counsel_staff = re.compile("|".join(cues["counseling_by_staff"]))
        self.procedure_title = re.compile("|".join(cues["procedure_note_title"]))
        self.heading_kinds = [
            (kind, re.compile("^(?:" + _alt(cues["headings"][kind]) + ")$"))
            for kind in ("procedure", "plan", "history", "neutral")
        ]

    def heading_kind(self, label: str) -> str | None:
        label = label.strip()
        for kind, pattern in self.heading_kinds:
            if pattern.match(label):
                return kind
        return None


class _Note:
    """One note split into lines, headings and sentences, with cue matches per sentence."""

    def __init__(self, text: str, cues: _Cues, date_of_service: dt.date | None = None) -> None:
        self.text = text
        self.low = text.lower()
        self.cues = cues
        self.sentences: list[_Sentence] = []
        self.line_spans: list[tuple[int, int]] = []
        self.heading_of_line: dict[int, str] = {}
        self._paragraphs: dict[int, list[_Sentence]] = {}
        self._paragraph_text: dict[int, str] = {}
        self.date_of_service = date_of_service
        self._split()
        self.starts = [s.start for s in self.sentences]
        first_lines = " ".join(self.low[a:b] for a, b in self.line_spans[:4])
        self.is_procedure_note = bool(cues.procedure_title.search(first_lines))

    def _split(self) -> None:
        pos, para, kind, heading_line = 0, 0, "", -1
        for line_no, raw in enumerate(self.text.split("\n")):
            start, end = pos, pos + len(raw)
            pos = end + 1
            self.line_spans.append((start, end))
            low = self.low[start:end]
            if not low.strip():
                para += 1
                continue
            body_start = start
            m = HEADING.match(NUMBERED_ITEM.sub(lambda x: " " * len(x.group(0)), low))
            if m:
                found = self.cues.heading_kind(m.group(1))
                if found is not None:
                    kind, heading_line = found, line_no
                    self.heading_of_line[line_no] = found
            # Sentences inside the line; a numbered "1." never ends a sentence.
            cut = body_start
            for sm in SENTENCE_END.finditer(self.text, start, end):
                before = self.low[max(start, sm.start() - 6) : sm.start()]
                token = re.split(r"[\s(]", before)[-1]
                if (
                    token in ABBREVIATIONS
                    or re.fullmatch(r"\d{1,2}", token)
                    and not self.low[start : sm.start()].strip(" 0123456789")
                ):
                    continue
                self._add(cut, sm.end(), line_no, para, kind, heading_line)
                cut = sm.end()
            if self.text[cut:end].strip():
                self._add(cut, end, line_no, para, kind, heading_line)

    def _add(self, start: int, end: int, line: int, para: int, kind: str, heading_line: int) -> None:
        while start < end and self.text[start].isspace():
            start += 1
        if start >= end:
            return
        sent = _Sentence(start, end, line, para, kind, heading_line)
        low = self.low[start:end]
        pseudo = [(m.start(), m.end()) for m in self.cues.pseudo.finditer(low)]
        found: list[tuple[int, int, int, str]] = []
        for state, direction, pattern in self.cues.tables:
            for m in pattern.finditer(low):
                if m.end() == m.start():
                    continue
                if any(a <= m.start() < b for a, b in pseudo):
                    continue
                if state == HISTORICAL and self._is_date_of_service(m.group(0)):
                    continue
                found.append((start + m.start(), start + m.end(), state, direction))
        # Longest cue wins where cues overlap ("will be performed" is not "performed").
        found.sort(key=lambda c: (-(c[1] - c[0]), c[0]))
        kept: list[tuple[int, int, int, str]] = []
        for cue in found:
            if all(cue[1] <= k[0] or cue[0] >= k[1] for k in kept):
                kept.append(cue)
        sent.cues = sorted(kept)
        self.sentences.append(sent)

    def _is_date_of_service(self, token: str) -> bool:
        if self.date_of_service is None:
            return False
        for m in DATE_TOKEN.finditer(token):
            try:
                if m.group("iso"):
                    day = dt.date.fromisoformat(m.group("iso"))
                else:
                    year = int(m.group("y"))
                    day = dt.date(year + 2000 if year < 100 else year, int(m.group("m")), int(m.group("d")))
            except ValueError:
                continue
            if day == self.date_of_service:
                return True
        return False

    # ---- lookups ----------------------------------------------------------------------------
    def sentence_at(self, offset: int) -> _Sentence | None:
        i = bisect.bisect_right(self.starts, offset) - 1
        if i >= 0 and self.sentences[i].start <= offset < self.sentences[i].end:
            return self.sentences[i]
        return None

    def line_text(self, line: int) -> str:
        if line < 0:
            return ""
        a, b = self.line_spans[line]
        return self.low[a:b]

    def sentence_low(self, sent: _Sentence) -> str:
        return self.low[sent.start : sent.end]

    def paragraph_sentences(self, para: int) -> list[_Sentence]:
        if not self._paragraphs:
            for s in self.sentences:
                self._paragraphs.setdefault(s.para, []).append(s)
        return self._paragraphs.get(para, [])

    def paragraph_low(self, sent: _Sentence) -> str:
        cached = self._paragraph_text.get(sent.para)
        if cached is None:
            cached = " ".join(self.sentence_low(s) for s in self.paragraph_sentences(sent.para))
            self._paragraph_text[sent.para] = cached
        return cached

    def item_low(self, sent: _Sentence) -> str:
        """The numbered/bulleted item (or the line) that holds `sent`."""
        return self.line_text(sent.line)

    def clause_bounds(self, sent: _Sentence, start: int, end: int, breaker: re.Pattern[str]) -> tuple[int, int]:
        low = self.low[sent.start : sent.end]
        lo, hi = sent.start, sent.end
        for m in breaker.finditer(low):
            a, b = sent.start + m.start(), sent.start + m.end()
            if b <= start:
                lo = max(lo, b)
            elif a >= end:
                hi = min(hi, a)
                break
        return lo, hi

    def chunk_low(self, sent: _Sentence, start: int, end: int) -> str:
        lo, hi = self.clause_bounds(sent, start, end, CHUNK_BREAK)
        return self.low[lo:hi]

    def assess(self, start: int, end: int) -> _Assessment:
        """Assertion of the service mention at [start, end): the strongest cue that reaches it."""
        sent = self.sentence_at(start)
        if sent is None:
            return _Assessment(NONE)
        lo, hi = self.clause_bounds(sent, start, end, CHUNK_BREAK)
        chunk = self._best_cue(sent, start, end, lo, hi)
        if chunk is not None and chunk.state not in (WEAK, WEAK_EXTERNAL):
            return chunk
        # A list ("will receive MMR, DTaP and IPV today") shares the cue of its clause.
        lo, hi = self.clause_bounds(sent, start, end, CLAUSE_BREAK)
        clause = self._best_cue(sent, start, end, lo, hi)
        if clause is not None and (chunk is None or clause.state < chunk.state):
            return clause
        if chunk is not None:
            return chunk
        if self.cues.sentence_hypothetical.search(self.low[sent.start : sent.end]):
            return _Assessment(HYPOTHETICAL)
        return _Assessment(NONE)

    def _best_cue(self, sent: _Sentence, start: int, end: int, lo: int, hi: int) -> _Assessment | None:
        best: _Assessment | None = None
        for a, b, state, direction in sent.cues:
            if b <= lo or a >= hi:
                continue
            overlaps = a < end and b > start
            if overlaps:
                applies = True
            elif b <= start:
                applies = direction in ("pre", "both")
                if applies and state == NEGATED:
                    gap = self.low[b:start].split()
                    limit = 2 if self.cues.short_negations.match(self.low[a:b]) else self.cues.negated_pre_max_words
                    applies = len(gap) <= (limit if direction == "pre" else 6)
            else:
                applies = direction in ("post", "both")
                if applies and state == NEGATED and direction == "both":
                    applies = len(self.low[end:a].split()) <= 6
            if applies and (best is None or state < best.state):
                best = _Assessment(state, (a, b))
        return best

    def decide(self, start: int, end: int, needs: str) -> tuple[int, _Assessment]:
        """Final state of a mention (PERFORMED, NEGATED, HYPOTHETICAL, HISTORICAL or NONE = ignore).

        needs: 'default' (performed unless a cue or the section says otherwise), 'performed' (an
        explicit performed cue, a result, or an in-office cue), 'procedure_note' (like default,
        but only in a procedure note or section).
        """
        found = self.assess(start, end)
        state = found.state
        sent = self.sentence_at(start)
        heading = sent.heading if sent else ""
        if state in (NEGATED, HISTORICAL, HYPOTHETICAL):
            return state, found
        if state in (EXTERNAL, WEAK_EXTERNAL):
            return NONE, found
        if state == PERFORMED:
            return PERFORMED, found
        if state == NONE and sent is not None and sent.heading_line >= 0 and sent.line != sent.heading_line:
            # A list under "Immunizations given today:" inherits the header's cue.
            hstart, hend = self.line_spans[sent.heading_line]
            header_state = self._header_state(hstart, hend)
            if header_state is not None:
                state = header_state
                if state in (NEGATED, HISTORICAL, HYPOTHETICAL):
                    return state, found
        if state in (WEAK, PERFORMED):
            return PERFORMED, found
        if heading == "plan":
            return HYPOTHETICAL, found
        if heading == "history":
            return HISTORICAL, found
        if needs == "default" or (needs == "procedure_note" and (self.is_procedure_note or heading == "procedure")):
            return PERFORMED, found
        return NONE, found

    def _header_state(self, start: int, end: int) -> int | None:
        sent = self.sentence_at(start)
        if sent is None:
            return None
        states = [c[2] for c in sent.cues if c[0] < end]
        if not states:
            return None
        best = min(states)
        if best in (EXTERNAL, WEAK_EXTERNAL):
            return None
        return best


# --------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------


@dataclass
class _Finding:
    code: str
    spans: list[tuple[int, int]]
    units: int = 1
    score: float = SCORE_DEFAULT
    flags: list[Flag] = field(default_factory=list)


def _num(token: str, numbers: Mapping[str, int]) -> int | None:
    token = token.strip().lower()
    if token.isdigit():
        return int(token)
    return numbers.get(token)


class ServiceDetector:
    """Finds services performed at the encounter and suggests their CPT codes.

    Built once at start-up from the CPT code set (`CandidateSource.codes("cpt")`): descriptions come
    from it, so a licensed CPT import's wording shows up without code changes; rules whose code is
    not in the code set are skipped (see `missing_codes`).
    """

    def __init__(self, cpt_codes: Mapping[str, CodeInfo], *, suggest_em: bool = True) -> None:
        self.cpt_codes = cpt_codes
        self.suggest_em = suggest_em
        rules = load_rules()
        self.rules = rules
        self.cues = _Cues(rules["cues"])
        svc = rules["services"]
        self.numbers: dict[str, int] = svc["numbers"]
        num_words = _alt([re.escape(k) for k in self.numbers])
        self.num_token = rf"(\d+|{num_words})"
        self._compile_simple(svc["simple"])
        self._compile_vaccines(rules["vaccines"])
        self._compile_structured(svc, rules["lacerations"])
        self.em_rules: dict[str, Any] = json.loads(_read_resource("em.json"))
        self.missing_codes = sorted(c for c in self._rule_codes() if c not in cpt_codes)

    # ---- compilation --------------------------------------------------------------------------
    def _compile_simple(self, simple: list[dict[str, Any]]) -> None:
        self.simple = []
        for rule in simple:
            self.simple.append(
                {
                    **rule,
                    "re": _word_re(rule["patterns"]),
                    "unless": re.compile(rule["unless_sentence"]) if rule.get("unless_sentence") else None,
                    "upgrade_re": re.compile(rule["upgrade"]["pattern"]) if rule.get("upgrade") else None,
                    "alternate_re": re.compile(rule["alternate"]["pattern"]) if rule.get("alternate") else None,
                    "requires_re": re.compile(rule["requires_sentence"]) if rule.get("requires_sentence") else None,
                }
            )
        # One pass over the note finds the sentences worth the per-rule patterns.
        self.simple_any = _word_re([p for rule in simple for p in rule["patterns"]])
        ua = r"urinalysis|\bua\b|urine dip(?:stick)?(?: test| analysis| urinalysis)?|dipstick (?:urinalysis|urine|ua)|"
        ua += r"urine (?:test )?strips?|dip(?:stick)? ua|poc ua|urine reagent strip"
        self.ua_re = re.compile(WORD.format(ua))

    def _compile_vaccines(self, rows: list[dict[str, str]]) -> None:
        self.vaccine_any = _word_re([p for row in rows for p in (row["names"], row["context_names"]) if p])
        self.vaccines = []
        for row in rows:
            self.vaccines.append(
                {
                    **row,
                    "names_re": _word_re(row["names"]) if row["names"] else None,
                    "context_re": _word_re(row["context_names"]) if row["context_names"] else None,
                    "components": int(row["components"]),
                    "pediatric_max_age": int(row["pediatric_max_age"]) if row["pediatric_max_age"] else None,
                }
            )

    def _compile_structured(self, svc: dict[str, Any], lac: dict[str, Any]) -> None:
        ecg = svc["ecg"]
        self.ecg = {
            **ecg,
            "re": _word_re(ecg["patterns"]),
            "tracing_only_re": re.compile("|".join(ecg["tracing_only_cues"])),
            "interpretation_only_re": re.compile("|".join(ecg["interpretation_only_cues"])),
        }
        img = svc["imaging"]
        self.imaging = {
            "trigger": _word_re(img["trigger"]),
            "views": re.compile(img["views"]),
            "parts": [{**p, "re": _word_re(p["pattern"])} for p in img["parts"]],
        }
        ji = svc["joint_injection"]
        self.joint = {
            "trigger": _word_re(ji["trigger"]),
            "ultrasound": re.compile(ji["ultrasound"]),
            "sites": [{**s, "re": _word_re(s["pattern"])} for s in ji["sites"]],
            "is_joint_work": re.compile(
                r"joint|intra-?articular|arthrocentesis|aspirat|bursa|steroid|kenalog|triamcinolone|methylpred|"
                r"depo-?medrol|hyaluron|synvisc|gel-one|cortisone|betamethasone|celestone|dexamethasone|"
                r"tendon|trigger point|carpal tunnel|fascia"
            ),
            "not_joint": re.compile(
                r"digital block|nerve block|local anesthe|anestheti[sz]ed|lacerat|wound|\bim\b|vaccin"
            ),
        }
        fx = svc["fracture"]
        self.fracture = {
            "manipulation": re.compile(
                r"closed reduction|(?:fracture|it) was reduced|(?:was|were) (?:then )?reduced (?:with|using|under|by)|"
                r"reduced the fracture|reduction (?:was )?(?:performed|achieved|done|maneuver)|manipulat(?:ion|ed)"
            ),
            "no_manipulation": re.compile(fx["no_manipulation"]),
            "treatment": re.compile(fx["treatment"]),
            "sites": [{**s, "re": _word_re(s["pattern"])} for s in fx["sites"]],
        }
        sp = svc["splints"]
        self.splints = {
            "trigger": _word_re(sp["trigger"]),
            "exclude": re.compile(sp["exclude"]),
            "types": [{**t, "re": _word_re(t["pattern"])} for t in sp["types"]],
        }
        en = svc["endoscopy"]
        self.endo = {
            "colonoscopy": _word_re(en["colonoscopy"]),
            "egd": _word_re(en["egd"]),
            "colon_region": _word_re(en["colon_region"]),
            "upper_region": _word_re(en["upper_region"]),
            "codes": {"colonoscopy": en["colonoscopy_codes"], "egd": en["egd_codes"]},
            "techniques": [(t["id"], _word_re(t["pattern"])) for t in en["techniques"]],
        }
        sb = svc["skin_biopsy"]
        self.biopsy = [{**t, "re": _word_re(t["pattern"])} for t in sb["techniques"]]
        de = svc["destruction"]
        self.destruction = {
            "trigger": _word_re(de["trigger"]),
            "premalignant": _word_re(de["premalignant"]),
            "benign": _word_re(de["benign"]),
            "malignant": _word_re(de["malignant"]),
            "premalignant_codes": de["premalignant_codes"],
            "benign_codes": de["benign_codes"],
        }
        self.lac = {
            **lac,
            "trigger_re": _word_re(lac["trigger"]),
            "repair_re": _word_re(lac["repair_cue"]),
            "no_repair_re": re.compile(lac["no_repair"]),
            "not_skin_re": _word_re(lac["not_skin"]),
            "length_context_re": re.compile(lac["length_context"]),
            "type_res": [(t, _word_re(lac["types"][t])) for t in ("complex", "intermediate", "simple")],
            "region_re": [(r, _word_re(p)) for r, p in lac["regions"].items()],
        }
        self.site_re = _word_re("|".join(lac["regions"].values()))

    def _rule_codes(self) -> set[str]:
        svc = self.rules["services"]
        codes = {r["code"] for r in svc["simple"]}
        codes |= {r["upgrade"]["code"] for r in svc["simple"] if r.get("upgrade")}
        codes |= {r["alternate"]["code"] for r in svc["simple"] if r.get("alternate")}
        codes |= {"81000", "81001", "81002", "81003"}
        codes |= {v["code"] for v in self.vaccines} | {v["adult_code"] for v in self.vaccines if v["adult_code"]}
        codes |= {"90460", "90461", "90471", "90472", "90473", "90474"}
        codes |= {svc["ecg"][k] for k in ("complete", "tracing_only", "interpretation_only")}
        for part in svc["imaging"]["parts"]:
            codes |= {c for _, c in part["views"]}
        for site in svc["joint_injection"]["sites"]:
            codes |= {site[k] for k in ("code", "code_us", "code_3plus") if k in site}
        for site in svc["fracture"]["sites"]:
            codes |= set(site["codes"])
        codes |= {t["code"] for t in svc["splints"]["types"]}
        for table in svc["endoscopy"]["colonoscopy_codes"], svc["endoscopy"]["egd_codes"]:
            codes |= set(table.values())
        for t in svc["skin_biopsy"]["techniques"]:
            codes |= {t["first"], t["additional"]}
        codes |= set(svc["destruction"]["premalignant_codes"].values()) | set(
            svc["destruction"]["benign_codes"].values()
        )
        for groups in self.rules["lacerations"]["groups"].values():
            for g in groups:
                codes |= {c for _, c in g.get("codes", [])} | {g[k] for k in ("first", "second", "addon") if k in g}
        return codes

    # ---- public API -----------------------------------------------------------------------------
    def detect(
        self,
        text: str,
        sections: Sequence[Section],
        setting: str,
        date_of_service: dt.date | None = None,
        *,
        age: int | None = None,
    ) -> tuple[list[Suggestion], list[Excluded]]:
        """Performed services of one note as CPT suggestions, and the service mentions left out.

        `sections` give evidence its section title (the whole text is one section "" when empty);
        `setting` is outpatient, inpatient or emergency; `date_of_service` picks date-dependent
        product codes (influenza vaccines); `age` (years) picks pediatric vaccine and
        administration codes and falls back to the age written in the note.
        """
        note = _Note(text, self.cues, date_of_service)
        ctx = _Context(note, setting, date_of_service, age if age is not None else _age_from_text(note.low))
        if OPERATIVE_NOTE.search(note.low) and "anesthesia" in note.low:
            ctx.operative_spans = [(m.end(), m.end() + 300) for m in OPERATIVE_PROCEDURE.finditer(note.low)]
        findings: list[_Finding] = []
        findings += self._simple_services(ctx)
        findings += self._urinalysis(ctx)
        findings += self._vaccines(ctx)
        findings += self._ecg(ctx)
        findings += self._imaging(ctx)
        findings += self._joint_injections(ctx)
        fracture = self._fractures(ctx)
        findings += fracture
        if not fracture:
            findings += self._splints(ctx)
        findings += self._endoscopy(ctx)
        findings += self._skin_biopsies(ctx)
        findings += self._destruction(ctx)
        findings += self._lacerations(ctx)
        suggestions = self._to_suggestions(findings, text, sections)
        if self.suggest_em and setting == "outpatient":
            em = suggest_em_level(text, self.em_rules)
            if em is not None and em.code in self.cpt_codes:
                suggestions.append(self._em_suggestion(em, text, sections))
        suggestions.sort(key=lambda s: -s.score)
        suggestions = [
            Suggestion(s.system, s.code, s.description, s.score, s.evidence, s.flags, rank=i + 1, units=s.units)
            for i, s in enumerate(suggestions)
        ]
        excluded = self._excluded(ctx, {s.code for s in suggestions})
        return suggestions, excluded

    # ---- helpers ----------------------------------------------------------------------------------
    def _record(self, ctx: _Context, start: int, end: int, state: int, codes: Sequence[str]) -> None:
        if state in EXCLUDED_REASON:
            ctx.excluded.setdefault((start, end), (EXCLUDED_REASON[state], tuple(codes)))

    def _allowed(self, ctx: _Context, kind: str, start: int) -> bool:
        """Professional-claim rule: which kinds of service count in this setting."""
        if kind == "procedure" and ctx.operative_spans is not None:
            # In an operative report only the procedures named as performed are services; injections,
            # closures and splints inside the operation belong to it.
            return any(a <= start < b for a, b in ctx.operative_spans)
        if ctx.setting == "outpatient":
            return True
        if kind in ("staff", "diagnostic"):
            return False
        if ctx.setting == "inpatient":
            return ctx.note.is_procedure_note or self._first_person_near(ctx, start)
        return True

    def _first_person_near(self, ctx: _Context, start: int) -> bool:
        sent = ctx.note.sentence_at(start)
        if sent is None:
            return False
        return bool(self.cues.first_person.search(ctx.note.paragraph_low(sent)))

    def _score(self, found: _Assessment) -> float:
        if found.state == PERFORMED:
            return SCORE_STRONG
        if found.state == WEAK:
            return SCORE_WEAK
        return SCORE_DEFAULT

    def _in_house(self, ctx: _Context, start: int, end: int, *, strict: bool) -> bool:
        sent = ctx.note.sentence_at(start)
        if sent is None:
            return False
        scope = ctx.note.chunk_low(sent, start, end) if strict else ctx.note.sentence_low(sent)
        if self.cues.in_house.search(scope):
            return True
        if sent.heading_line >= 0:
            header = ctx.note.line_text(sent.heading_line)
            if sent.line == sent.heading_line:
                # Only the label ("Point-of-care testing:") speaks for the whole line.
                header = header.split(":", 1)[0] if ":" in header else ""
            if self.cues.in_house.search(header):
                return True
        return False

    # ---- simple one-code services -------------------------------------------------------------
    def _simple_services(self, ctx: _Context) -> list[_Finding]:
        note = ctx.note
        matches: list[tuple[int, int, dict[str, Any]]] = []
        for lo, hi in _candidate_windows(note, self.simple_any):
            window = note.low[lo:hi]
            for rule in self.simple:
                for m in rule["re"].finditer(window):
                    matches.append((lo + m.start(), lo + m.end(), rule))
        matches = _longest_first(matches)
        by_code: dict[str, _Finding] = {}
        for start, end, rule in matches:
            sent = note.sentence_at(start)
            if sent is None:
                continue
            if rule["unless"] is not None and rule["unless"].search(note.sentence_low(sent)):
                continue
            if rule["requires_re"] is not None and not rule["requires_re"].search(note.sentence_low(sent)):
                continue
            needs = "in_house" if rule["needs"] == "in_house" else rule["needs"]
            state, found = note.decide(start, end, "performed" if needs == "in_house" else needs)
            if state == PERFORMED and needs == "in_house":
                if not self._in_house(ctx, start, end, strict=True):
                    continue
            elif state == NONE and needs == "in_house" and self._in_house(ctx, start, end, strict=True):
                state = PERFORMED
            self._record(ctx, start, end, state, [rule["code"]])
            if state != PERFORMED or not self._allowed(ctx, rule["kind"], start):
                continue
            code = rule["code"]
            if rule["upgrade_re"] is not None and rule["upgrade_re"].search(note.paragraph_low(sent)):
                code = rule["upgrade"]["code"]
            if rule["alternate_re"] is not None and rule["alternate_re"].search(note.sentence_low(sent)):
                code = rule["alternate"]["code"]
            units, flags = self._units(rule.get("units"), note.sentence_low(sent))
            finding = by_code.get(code)
            if finding is None:
                by_code[code] = _Finding(code, [(start, end)], units, self._score(found), flags)
            else:
                finding.spans.append((start, end))
                finding.units = max(finding.units, units)
        return list(by_code.values())

    def _units(self, kind: str | None, sentence: str) -> tuple[int, list[Flag]]:
        if kind == "flu_ab" and re.search(r"\ba\s*(?:/|and|&)\s*b\b", sentence):
            return 2, [Flag("quantity", "influenza A and B antigens: 2 units")]
        if kind == "ears" and re.search(r"bilateral|both ears|\bbilat\b|\bau\b", sentence):
            return 2, [Flag("quantity", "both ears: 2 units (or modifier 50)")]
        if kind == "treatments":
            m = re.search(
                self.num_token + r"\s+(?:\w+\s+)?(?:treatments|nebs|nebulizers)|(?:x|\u00d7)\s*(\d)\b", sentence
            )
            if m:
                n = _num(m.group(1) or m.group(2), self.numbers) or 1
                if n > 1:
                    return n, [Flag("quantity", f"{n} nebulizer treatments")]
            if "back-to-back" in sentence or "back to back" in sentence:
                return 2, [Flag("quantity", "back-to-back treatments: at least 2"), Flag("needs_review", "count")]
        return 1, []

    # ---- urinalysis ---------------------------------------------------------------------------------
    def _urinalysis(self, ctx: _Context) -> list[_Finding]:
        note = ctx.note
        out: _Finding | None = None
        for m in self.ua_re.finditer(note.low):
            start, end = m.start(), m.end()
            sent = note.sentence_at(start)
            if sent is None:
                continue
            state, found = note.decide(start, end, "performed")
            is_dip = "dip" in m.group(0) or "strip" in m.group(0)
            if state in (PERFORMED, NONE) and (is_dip or self._in_house(ctx, start, end, strict=False)):
                state = PERFORMED
            elif state == PERFORMED:
                state = NONE
            self._record(ctx, start, end, state, ["81002"])
            if state != PERFORMED or not self._allowed(ctx, "staff", start):
                continue
            low = note.sentence_low(sent)
            micro = bool(re.search(r"microscop|with micro|sediment|urine micro|\bmicro\b", low)) and not re.search(
                r"(?:no|without|non-?)\s*(?:\w+\s)?microscop|no micro|without micro", low
            )
            automated = bool(re.search(r"automated|analy[sz]er|clinitek|instrument|machine[- ]read", low)) and not (
                re.search(r"non-?automated|manual(?:ly)?|visual(?:ly)?|by eye", low)
            )
            code = {(False, False): "81002", (True, False): "81003", (False, True): "81000", (True, True): "81001"}[
                (automated, micro)
            ]
            if out is None:
                out = _Finding(code, [(start, end)], 1, self._score(found))
            else:
                out.spans.append((start, end))
        return [out] if out else []

    # ---- immunizations ------------------------------------------------------------------------------
    def _vaccines(self, ctx: _Context) -> list[_Finding]:
        note = ctx.note
        matches: list[tuple[int, int, dict[str, Any]]] = []
        windows = _candidate_windows(note, self.vaccine_any)
        for row in self.vaccines:
            for key in ("names_re", "context_re"):
                pattern = row[key]
                if pattern is None:
                    continue
                for m in _finditer_in(pattern, note.low, windows):
                    if key == "context_re":
                        sent = note.sentence_at(m.start())
                        if sent is None:
                            continue
                        header = note.line_text(sent.heading_line)
                        if not (
                            VACCINE_CONTEXT.search(note.chunk_low(sent, m.start(), m.end()))
                            or re.search(r"immuniz|vaccin", header)
                        ):
                            continue
                    matches.append((m.start(), m.end(), row))
        matches = _longest_first(matches)
        given: dict[str, tuple[dict[str, Any], _Finding]] = {}
        for start, end, row in matches:
            sent = note.sentence_at(start)
            if sent is None:
                continue
            state, found = note.decide(start, end, "performed")
            if state == NONE and VACCINE_PERFORMED.search(note.chunk_low(sent, start, end)):
                state = PERFORMED
            code = self._vaccine_code(row, ctx)
            self._record(ctx, start, end, state, [code])
            if state != PERFORMED or not self._allowed(ctx, "staff", start):
                continue
            if row["id"] in given:
                given[row["id"]][1].spans.append((start, end))
                continue
            flags = [Flag("quantity", f"{row['id']}: {row['components']} component(s)")]
            given[row["id"]] = (row, _Finding(code, [(start, end)], 1, self._score(found), flags))
        findings = [f for _, f in given.values()]
        if given:
            findings += self._vaccine_admin(ctx, [r for r, _ in given.values()], [f for _, f in given.values()])
        return findings

    def _vaccine_code(self, row: dict[str, Any], ctx: _Context) -> str:
        code = row["code"]
        if row["code_before_2024_07"] and ctx.date_of_service is not None:
            if ctx.date_of_service < dt.date(2024, 7, 1):
                code = row["code_before_2024_07"]
        if row["pediatric_max_age"] is not None and ctx.age is not None and ctx.age > row["pediatric_max_age"]:
            code = row["adult_code"] or code
        return code

    def _vaccine_admin(self, ctx: _Context, rows: list[dict[str, Any]], found: list[_Finding]) -> list[_Finding]:
        """Administration codes: 90460/90461 by component with physician counseling (age <= 18), else
        90471/90472 per injection and 90473/90474 per oral or intranasal vaccine."""
        note = ctx.note
        spans = [s for f in found for s in f.spans[:1]]
        counsel_span: tuple[int, int] | None = None
        for sent in note.sentences:
            low = note.sentence_low(sent)
            m = self.cues.counsel_physician.search(low)
            if m and not self.cues.counsel_staff.search(low[: m.end() + 20]):
                if re.search(r"vaccin|immuniz|component|vis\b", low) or any(
                    sent.line == note.sentence_at(s[0]).line or sent.line == note.sentence_at(s[0]).heading_line
                    for s in spans
                    if note.sentence_at(s[0]) is not None
                ):
                    counsel_span = (sent.start + m.start(), sent.start + m.end())
                    break
        names = ", ".join(f"{r['id']} {r['components']}" for r in rows)
        out: list[_Finding] = []
        if ctx.age is not None and ctx.age <= 18 and counsel_span is not None:
            n_vaccines = len(rows)
            extra = sum(r["components"] - 1 for r in rows)
            msg = f"components: {names}; 90460 x{n_vaccines} (first component of each vaccine)"
            if extra:
                msg += f", 90461 x{extra} (each additional component)"
            flags = [Flag("quantity", msg)]
            out.append(_Finding("90460", [counsel_span, *spans], n_vaccines, SCORE_STRONG, list(flags)))
            if extra:
                out.append(_Finding("90461", [counsel_span, *spans], extra, SCORE_STRONG, list(flags)))
            return out
        injections = [r for r in rows if r["route"] in ("im", "sc", "id")]
        other = [r for r in rows if r not in injections]
        if ctx.age is not None and ctx.age <= 18 and counsel_span is None:
            review = [Flag("needs_review", "age <= 18 without documented physician counseling: 90471-90474 used")]
        else:
            review = []
        if injections:
            msg = f"{len(injections)} injected vaccine(s): 90471 x1"
            if len(injections) > 1:
                msg += f", 90472 x{len(injections) - 1}"
            if other:
                msg += f"; {len(other)} oral/intranasal: 90474 x{len(other)}"
            flags = [Flag("quantity", msg), *review]
            out.append(_Finding("90471", spans, 1, SCORE_STRONG, list(flags)))
            if len(injections) > 1:
                out.append(_Finding("90472", spans, len(injections) - 1, SCORE_STRONG, list(flags)))
            if other:
                out.append(_Finding("90474", spans, len(other), SCORE_STRONG, list(flags)))
        elif other:
            msg = f"{len(other)} oral/intranasal vaccine(s): 90473 x1" + (
                f", 90474 x{len(other) - 1}" if len(other) > 1 else ""
            )
            flags = [Flag("quantity", msg), *review]
            out.append(_Finding("90473", spans, 1, SCORE_STRONG, list(flags)))
            if len(other) > 1:
                out.append(_Finding("90474", spans, len(other) - 1, SCORE_STRONG, list(flags)))
        return out

    # ---- ECG ------------------------------------------------------------------------------------------
    def _ecg(self, ctx: _Context) -> list[_Finding]:
        note = ctx.note
        ecg = self.ecg
        result: _Finding | None = None
        for m in ecg["re"].finditer(note.low):
            start, end = m.start(), m.end()
            sent = note.sentence_at(start)
            if sent is None:
                continue
            state, found = note.decide(start, end, "performed")
            low = note.sentence_low(sent)
            if ECG_MONITORING.search(low):
                continue
            if state == PERFORMED and not ECG_DONE.search(low):
                state = NONE
            self._record(ctx, start, end, state, [ecg["complete"]])
            if state != PERFORMED:
                continue
            first_person = bool(self.cues.first_person.search(low))
            if ctx.setting == "outpatient":
                if ecg["tracing_only_re"].search(low):
                    code = ecg["tracing_only"]
                elif ecg["interpretation_only_re"].search(low):
                    code = ecg["interpretation_only"]
                else:
                    code = ecg["complete"]
            elif first_person:
                code = ecg["interpretation_only"]
            else:
                continue
            if result is None:
                result = _Finding(code, [(start, end)], 1, self._score(found))
            elif len(result.spans) < MAX_EVIDENCE:
                result.spans.append((start, end))
        return [result] if result else []

    # ---- imaging ----------------------------------------------------------------------------------
    def _imaging(self, ctx: _Context) -> list[_Finding]:
        if ctx.setting != "outpatient":
            return []
        note = ctx.note
        by_part: dict[str, _Finding] = {}
        for m in self.imaging["trigger"].finditer(note.low):
            start, end = m.start(), m.end()
            sent = note.sentence_at(start)
            if sent is None:
                continue
            state, found = note.decide(start, end, "performed")
            low = note.sentence_low(sent)
            part = _nearest(self.imaging["parts"], low, start - sent.start, end - sent.start)
            if part is None:
                continue
            self._record(ctx, start, end, state, [part["views"][0][1]])
            if state != PERFORMED:
                continue
            # The practice bills the film only when it is taken here, not when outside films are read.
            if not IMAGING_HERE.search(low):
                continue
            vm = self.imaging["views"].search(low)
            flags: list[Flag] = []
            if vm:
                token = (vm.group(1) or vm.group(2) or "").strip()
                views = (
                    2
                    if "and" in token or "/" in token
                    else (_num(token, self.numbers) or (1 if token == "single" else 0))
                )
            else:
                views = 0
            if views <= 0:
                code = part["views"][0][1]
                flags.append(Flag("needs_review", "number of views not documented; smallest view count assumed"))
            else:
                code = next(c for mx, c in part["views"] if views <= mx)
                flags.append(Flag("quantity", f"{part['id']} radiograph, {views} view(s)"))
            if code not in by_part:
                by_part[code] = _Finding(
                    code, [(start, end)], 1, self._score(found) - (REVIEW_PENALTY if not vm else 0), flags
                )
        return list(by_part.values())

    # ---- joint / soft-tissue injections -------------------------------------------------------------
    def _joint_injections(self, ctx: _Context) -> list[_Finding]:
        note = ctx.note
        jt = self.joint
        found_codes: dict[str, tuple[_Finding, set[str]]] = {}
        for m in jt["trigger"].finditer(note.low):
            start, end = m.start(), m.end()
            sent = note.sentence_at(start)
            if sent is None:
                continue
            low = note.sentence_low(sent)
            scope_low = low
            # A named structure (carpal tunnel, tendon sheath) beats the joint it lies in ("wrist").
            site = _first([x for x in jt["sites"] if "size" not in x], low) or _nearest(
                jt["sites"], low, start - sent.start, end - sent.start
            )
            if site is None and sent.heading_line >= 0 and sent.heading == "procedure":
                scope_low = note.line_text(sent.heading_line)
                site = _first(jt["sites"], scope_low)
            if site is None:
                continue
            if jt["not_joint"].search(low) and not re.search(r"joint|bursa|carpal tunnel|tendon|trigger point", low):
                continue
            near = low[max(0, start - sent.start - 40) : end - sent.start + 40]
            if not (jt["is_joint_work"].search(low + " " + scope_low) or site["re"].search(near)):
                continue
            state, assessment = note.decide(start, end, "default")
            code = site["code"]
            self._record(ctx, start, end, state, [code])
            if state != PERFORMED or not self._allowed(ctx, "procedure", start):
                continue
            flags: list[Flag] = []
            para = note.paragraph_low(sent)
            if site.get("code_us") and jt["ultrasound"].search(para):
                code = site["code_us"]
                flags.append(Flag("needs_review", "ultrasound guidance: permanent recording and report required"))
            if site["id"] == "trigger_point":
                cm = re.search(self.num_token + r"\s+(?:\w+\s+)?(?:muscles|trigger points|sites|muscle groups)", para)
                n = _num(cm.group(1), self.numbers) if cm else None
                if n and n >= 3:
                    code = site["code_3plus"]
                flags.append(Flag("quantity", f"trigger point injection: {n or '1-2'} muscle(s)"))
            sides = set(SIDE.findall(low)) or {""}
            side_key = {"r": "right", "l": "left", "both": "bilateral"}
            sides = {side_key.get(s, s) for s in sides}
            if code in found_codes:
                finding, seen = found_codes[code]
                finding.spans.append((start, end))
                seen |= sides
            else:
                finding = _Finding(code, [(start, end)], 1, self._score(assessment), flags)
                found_codes[code] = (finding, set(sides))
        out = []
        for finding, sides in found_codes.values():
            explicit = sides - {""}
            units = 2 if "bilateral" in explicit or {"right", "left"} <= explicit else 1
            if units == 2:
                finding.flags.append(Flag("quantity", "bilateral: 2 units (or modifier 50)"))
            finding.units = units
            out.append(finding)
        return out

    # ---- fractures and splints ----------------------------------------------------------------------
    def _fractures(self, ctx: _Context) -> list[_Finding]:
        note = ctx.note
        fx = self.fracture
        out: dict[str, _Finding] = {}
        for sent in note.sentences:
            low = note.sentence_low(sent)
            manip = fx["manipulation"].search(low)
            treat = fx["treatment"].search(low)
            if not (manip or treat):
                continue
            para = note.paragraph_low(sent)
            if not FRACTURE.search(para) and not FRACTURE.search(note.line_text(sent.heading_line)):
                continue
            cue = manip or treat
            assert cue is not None
            start, end = sent.start + cue.start(), sent.start + cue.end()
            with_manipulation = bool(manip) and not fx["no_manipulation"].search(low[: manip.start()] if manip else "")
            if manip and re.search(r"(?:no|not|without)\s+(?:\w+\s+)?(?:closed )?reduction", low):
                with_manipulation = False
                if not treat:
                    continue
            site = _nearest(fx["sites"], low, cue.start(), cue.end()) or _first(fx["sites"], para)
            if site is None:
                site = self._fracture_site_in_note(note)
            if site is None:
                continue
            code = site["codes"][1 if with_manipulation else 0]
            state, assessment = note.decide(start, end, "default")
            self._record(ctx, start, end, state, [code])
            if state != PERFORMED or not self._allowed(ctx, "procedure", start):
                continue
            if code in out:
                out[code].spans.append((start, end))
                continue
            flags = [
                Flag(
                    "quantity",
                    f"closed treatment, {site['id'].replace('_', ' ')}, "
                    f"{'with' if with_manipulation else 'without'} manipulation",
                )
            ]
            out[code] = _Finding(code, [(start, end)], 1, self._score(assessment), flags)
        # With and without manipulation of the same fracture: the reduction is the service.
        for site in fx["sites"]:
            without, with_ = site["codes"]
            if without != with_ and without in out and with_ in out:
                del out[without]
        return list(out.values())

    def _fracture_site_in_note(self, note: _Note) -> dict[str, Any] | None:
        for sent in note.sentences:
            low = note.sentence_low(sent)
            if FRACTURE.search(low):
                site = _first(self.fracture["sites"], low)
                if site is not None:
                    return site
        return None

    def _splints(self, ctx: _Context) -> list[_Finding]:
        note = ctx.note
        out: dict[str, _Finding] = {}
        for m in self.splints["trigger"].finditer(note.low):
            start, end = m.start(), m.end()
            sent = note.sentence_at(start)
            if sent is None:
                continue
            low = note.sentence_low(sent)
            if self.splints["exclude"].search(low):
                continue
            kind = _nearest(self.splints["types"], low, start - sent.start, end - sent.start)
            if kind is None:
                continue
            state, assessment = note.decide(start, end, "performed")
            self._record(ctx, start, end, state, [kind["code"]])
            if state != PERFORMED or assessment.state != PERFORMED or not self._allowed(ctx, "procedure", start):
                continue
            if kind["code"] not in out:
                out[kind["code"]] = _Finding(kind["code"], [(start, end)], 1, SCORE_WEAK)
        return list(out.values())

    # ---- endoscopy ------------------------------------------------------------------------------------
    def _endoscopy(self, ctx: _Context) -> list[_Finding]:
        note = ctx.note
        en = self.endo
        performed: dict[str, list[tuple[int, int]]] = {}
        mentions: list[tuple[int, str]] = []
        for proc in ("colonoscopy", "egd"):
            for m in en[proc].finditer(note.low):
                start, end = m.start(), m.end()
                mentions.append((start, proc))
                state, assessment = note.decide(start, end, "procedure_note")
                if state == PERFORMED and not note.is_procedure_note and assessment.state != PERFORMED:
                    state = NONE
                self._record(ctx, start, end, state, [en["codes"][proc]["base"]])
                if state == PERFORMED and self._allowed(ctx, "procedure", start):
                    performed.setdefault(proc, []).append((start, end))
        if not performed:
            return []
        mentions.sort()
        techniques: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for tech_id, pattern in en["techniques"]:
            for m in pattern.finditer(note.low):
                start, end = m.start(), m.end()
                sent = note.sentence_at(start)
                if sent is None:
                    continue
                if tech_id == "biopsy" and re.search(r"hot (?:biopsy )?forceps", note.sentence_low(sent)):
                    continue
                state, _ = note.decide(start, end, "procedure_note")
                if state != PERFORMED:
                    if state in EXCLUDED_REASON:
                        self._record(ctx, start, end, state, [])
                    continue
                proc = self._endoscopy_target(note, sent, start, performed, mentions)
                if proc is None:
                    continue
                techniques.setdefault((proc, tech_id), []).append((start, end))
        out: list[_Finding] = []
        for proc, spans in performed.items():
            codes = en["codes"][proc]
            used = [(tech, s) for (p, tech), s in techniques.items() if p == proc and tech in codes]
            if not used:
                out.append(_Finding(codes["base"], spans[:MAX_EVIDENCE], 1, SCORE_STRONG))
                continue
            for tech, tspans in used:
                out.append(
                    _Finding(
                        codes[tech],
                        (tspans + spans)[:MAX_EVIDENCE],
                        1,
                        SCORE_STRONG,
                        [Flag("quantity", f"{proc}: {tech.replace('_', ' ')} ({len(tspans)} mention(s))")],
                    )
                )
        return out

    def _endoscopy_target(
        self,
        note: _Note,
        sent: _Sentence,
        start: int,
        performed: Mapping[str, list[tuple[int, int]]],
        mentions: list[tuple[int, str]],
    ) -> str | None:
        if len(performed) == 1:
            return next(iter(performed))
        low = note.sentence_low(sent)
        colon = bool(self.endo["colon_region"].search(low))
        upper = bool(self.endo["upper_region"].search(low))
        if colon != upper:
            return "colonoscopy" if colon else "egd"
        before = [p for s, p in mentions if s <= start]
        return before[-1] if before else None

    # ---- skin biopsy ----------------------------------------------------------------------------------
    def _lesion_items(
        self, ctx: _Context, triggers: Sequence[tuple[int, int]], count_words: str, codes: Sequence[str], needs: str
    ) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """Mentions of one lesion procedure grouped by lesion site: [{site, count, spans, plural}]."""
        note = ctx.note
        items: list[dict[str, Any]] = []
        for start, end in triggers:
            sent = note.sentence_at(start)
            if sent is None:
                continue
            state, assessment = note.decide(start, end, needs)
            self._record(ctx, start, end, state, codes)
            if state != PERFORMED or not self._allowed(ctx, "procedure", start):
                continue
            low = note.item_low(sent)
            count, plural, count_span = self._count(low, count_words)
            site_m = self.site_re.search(low)
            side_m = SIDE.search(low[: site_m.start()][-12:]) if site_m else None
            site = f"{side_m.group(1) if side_m else ''} {site_m.group(0)}".strip() if site_m else ""
            spans = [(start, end)]
            if count_span is not None:
                line_start = note.line_spans[sent.line][0]
                spans.append((line_start + count_span[0], line_start + count_span[1]))
            items.append(
                {
                    "site": site,
                    "count": count,
                    "plural": plural,
                    "spans": spans,
                    "line": sent.line,
                    "score": self._score(assessment),
                }
            )
        merged: list[dict[str, Any]] = []
        for item in items:
            same = [
                x
                for x in merged
                if x["line"] == item["line"] or (item["site"] and x["site"] == item["site"]) or not item["site"]
            ]
            if same:
                target = same[0]
                target["count"] = max(target["count"], item["count"])
                target["plural"] = target["plural"] or item["plural"]
                target["spans"] += item["spans"]
                if not target["site"]:
                    target["site"] = item["site"]
            else:
                merged.append(item)
        spans = [s for x in merged for s in x["spans"]]
        return merged, spans

    def _count(self, low: str, lesion_words: str) -> tuple[int, bool, tuple[int, int] | None]:
        """Number of lesions written in an item: '3 AKs', 'three actinic keratoses', 'AKs x 12', '1 lesion'."""
        nt = self.num_token
        total = re.search(r"total of " + nt, low)
        if total and _num(total.group(1), self.numbers):
            return _num(total.group(1), self.numbers) or 1, True, total.span()
        patterns = [
            nt + r"\s+(?:\w+\s+){0,2}?(?:" + lesion_words + r")",
            r"(?:" + lesion_words + r")\s*(?:x|\u00d7|#)\s*(\d+)\b",
            r"(?:" + lesion_words + r")\s*\((\d+)\)",
        ]
        for p in patterns:
            found = [(m, _num(m.group(1), self.numbers)) for m in re.finditer(p, low)]
            found = [(m, n) for m, n in found if n is not None]
            if found:
                positive = [(m, n) for m, n in found if n > 0]
                if positive:
                    total_n = sum(n for _, n in positive)
                    return total_n, total_n > 1, positive[0][0].span()
                return 0, True, found[0][0].span()
        plural = bool(re.search(r"(?:" + lesion_words + r")", low)) and bool(
            re.search(r"keratoses|\baks\b|warts|lesions|verrucae|biopsies|skin tags|molluscum", low)
        )
        return 1, plural, None

    def _skin_biopsies(self, ctx: _Context) -> list[_Finding]:
        per_tech: list[tuple[dict[str, Any], int, list[tuple[int, int]], bool]] = []
        words = r"(?:shave |punch |tangential |incisional )?biops(?:y|ies)|lesions?"
        for tech in self.biopsy:
            triggers = [(m.start(), m.end()) for m in tech["re"].finditer(ctx.note.low)]
            items, spans = self._lesion_items(ctx, triggers, words, [tech["first"]], "default")
            if not items:
                continue
            count = sum(max(1, it["count"]) for it in items)
            unsure = any(it["plural"] and it["count"] <= 1 for it in items)
            per_tech.append((tech, count, spans, unsure))
        if not per_tech:
            return []
        per_tech.sort(key=lambda t: -t[0]["rank"])
        out: list[_Finding] = []
        summary = ", ".join(f"{t['id']} x{n}" for t, n, _, _ in per_tech)
        for i, (tech, count, spans, unsure) in enumerate(per_tech):
            flags = [Flag("quantity", f"skin biopsy lesions: {summary}")]
            if unsure:
                flags.append(Flag("needs_review", "plural biopsies without a stated count"))
            score = SCORE_STRONG - (REVIEW_PENALTY if unsure else 0)
            if i == 0:
                out.append(_Finding(tech["first"], spans[:MAX_EVIDENCE], 1, score, flags))
                if count > 1:
                    out.append(_Finding(tech["additional"], spans[:MAX_EVIDENCE], count - 1, score, list(flags)))
            else:
                out.append(_Finding(tech["additional"], spans[:MAX_EVIDENCE], count, score, flags))
        return out

    # ---- destruction ---------------------------------------------------------------------------------
    def _destruction(self, ctx: _Context) -> list[_Finding]:
        note = ctx.note
        de = self.destruction
        groups: dict[str, list[tuple[int, int]]] = {"premalignant": [], "benign": []}
        for m in de["trigger"].finditer(note.low):
            sent = note.sentence_at(m.start())
            if sent is None:
                continue
            low = note.item_low(sent)
            if de["malignant"].search(low):
                continue
            if de["premalignant"].search(low):
                groups["premalignant"].append((m.start(), m.end()))
            elif de["benign"].search(low):
                groups["benign"].append((m.start(), m.end()))
        out: list[_Finding] = []
        for kind, triggers in groups.items():
            if not triggers:
                continue
            words = de[kind].pattern[len("(?<![a-z0-9])(?:") : -len(")(?![a-z0-9])")] + r"|lesions?"
            items, spans = self._lesion_items(ctx, triggers, words, [], "default")
            if not items:
                continue
            count = sum(it["count"] for it in items)
            unsure = any(it["plural"] and it["count"] <= 1 for it in items) or any(it["count"] == 0 for it in items)
            if unsure:
                count = max(count, 2)
            flags = [Flag("quantity", f"{kind} lesions destroyed: {count}")]
            if unsure:
                flags.append(Flag("needs_review", "lesion count not stated; at least 2 assumed"))
            score = SCORE_STRONG - (REVIEW_PENALTY if unsure else 0)
            if kind == "premalignant":
                codes = de["premalignant_codes"]
                if count >= 15:
                    out.append(_Finding(codes["fifteen_plus"], spans[:MAX_EVIDENCE], 1, score, flags))
                else:
                    out.append(_Finding(codes["first"], spans[:MAX_EVIDENCE], 1, score, flags))
                    if count > 1:
                        out.append(_Finding(codes["each_2_14"], spans[:MAX_EVIDENCE], count - 1, score, list(flags)))
            else:
                codes = de["benign_codes"]
                code = codes["fifteen_plus"] if count >= 15 else codes["up_to_14"]
                out.append(_Finding(code, spans[:MAX_EVIDENCE], 1, score, flags))
        return out

    # ---- wound repair ---------------------------------------------------------------------------------
    def _lacerations(self, ctx: _Context) -> list[_Finding]:
        note = ctx.note
        lac = self.lac
        wounds: list[dict[str, Any]] = []
        seen_paras: set[int] = set()
        for sent in note.sentences:
            low = note.sentence_low(sent)
            if sent.para in seen_paras:
                continue
            trig = lac["trigger_re"].search(low)
            rep = lac["repair_re"].search(low) if trig else None
            if not (trig and rep):
                continue
            para_sents = note.paragraph_sentences(sent.para)
            para_low = note.paragraph_low(sent)
            if lac["not_skin_re"].search(low) or lac["no_repair_re"].search(low):
                continue
            start, end = sent.start + rep.start(), sent.start + rep.end()
            state, assessment = note.decide(start, end, "default")
            self._record(ctx, start, end, state, ["12001"])
            if state != PERFORMED or not self._allowed(ctx, "procedure", start):
                continue
            seen_paras.add(sent.para)
            for wound in self._wounds_in(note, para_sents, para_low, sent):
                wound["para"] = sent.para
                wounds.append(wound)
        if not wounds:
            return []
        # A wound restated elsewhere (impression: "scalp laceration 2.0 cm, repaired") is the same wound.
        unique: list[dict[str, Any]] = []
        for w in wounds:
            if not any(
                u["length"] == w["length"] and u["region"] == w["region"] and u["para"] != w["para"] for u in unique
            ):
                unique.append(w)
        wounds = unique
        sums: dict[tuple[str, int], dict[str, Any]] = {}
        for w in wounds:
            rtype = w["type"]
            if rtype == "complex" and w["length"] <= 1.0:
                rtype = "intermediate"
            groups = lac["groups"][rtype]
            gi = next((i for i, g in enumerate(groups) if w["region"] in g["regions"]), None)
            if gi is None:
                gi = 0
                w["flags"].append(Flag("needs_review", "wound site not recognised; first anatomic group assumed"))
            key = (rtype, gi)
            agg = sums.setdefault(key, {"lengths": [], "spans": [], "flags": []})
            agg["lengths"].append(w["length"])
            agg["spans"] += w["spans"]
            agg["flags"] += w["flags"]
        out: list[_Finding] = []
        for (rtype, gi), agg in sums.items():
            group = lac["groups"][rtype][gi]
            total = round(sum(agg["lengths"]), 1)
            parts = " + ".join(f"{x:.1f} cm" for x in agg["lengths"])
            message = f"laceration {parts} = {total:.1f} cm, {rtype}, {group['label']}"
            flags = [Flag("quantity", message), *agg["flags"]]
            score = SCORE_STRONG - (REVIEW_PENALTY if agg["flags"] else 0)
            spans = agg["spans"][:MAX_EVIDENCE]
            if "codes" in group:
                code = next(c for mx, c in group["codes"] if total <= mx + 1e-9)
                out.append(_Finding(code, spans, 1, score, flags))
            else:
                first = group["first"] if total <= 2.5 + 1e-9 else group["second"]
                out.append(_Finding(first, spans, 1, score, flags))
                if total > 7.5 + 1e-9:
                    extra = int(-(-(total - 7.5) // 5.0))
                    out.append(_Finding(group["addon"], spans, extra, score, list(flags)))
        return out

    def _wounds_in(
        self, note: _Note, para_sents: list[_Sentence], para_low: str, repair_sent: _Sentence
    ) -> list[dict[str, Any]]:
        """Wounds (length, region, type) documented in one repair paragraph."""
        lac = self.lac
        block_type = next((t for t, r in lac["type_res"] if r.search(para_low)), "simple")
        block_region = _region(lac["region_re"], note.sentence_low(repair_sent)) or _region(lac["region_re"], para_low)
        lengths: list[dict[str, Any]] = []
        totals: list[dict[str, Any]] = []
        for sent in para_sents:
            low = note.sentence_low(sent)
            if lac["not_skin_re"].search(low):
                continue
            # Lengths count only where the sentence speaks of the wound (not "a 4-0 suture", "10 mm trocar").
            if sent is not repair_sent and not lac["length_context_re"].search(low):
                continue
            for m in LENGTH.finditer(low):
                a, b = m.group(1), m.group(2)
                value = max(float(a), float(b)) if b else float(a)
                value = _to_cm(value, m.group(3))
                before = low[max(0, m.start() - 30) : m.start()]
                if re.search(r"(?:\d|x)\s*$", before) or re.search(
                    r"needle|gauge|\bg\b|suture", low[m.end() : m.end() + 12]
                ):
                    continue
                region = self._wound_region(low, m.start(), m.end()) or block_region
                rtype = _nearest_type(lac["type_res"], low, m.start()) or block_type
                item = {
                    "length": round(value, 1),
                    "region": region or "",
                    "type": rtype,
                    "spans": [(sent.start + m.start(), sent.start + m.end())],
                    "flags": [],
                }
                (totals if re.search(r"total(?: length)?(?: of)?:?\s*$", before) else lengths).append(item)
        wounds = totals or lengths
        # The same wound is often measured twice in one paragraph ("2 cm laceration ... length 2 cm").
        unique: list[dict[str, Any]] = []
        for w in wounds:
            if any(u["length"] == w["length"] and u["region"] == w["region"] for u in unique) and not totals:
                continue
            unique.append(w)
        wounds = unique
        repair_span = (repair_sent.start, repair_sent.end)
        if not wounds:
            wounds = self._lengths_elsewhere(note, block_region)
            for w in wounds:
                w["type"] = block_type
        if not wounds:
            return [
                {
                    "length": 1.0,
                    "region": block_region or "",
                    "type": block_type,
                    "spans": [repair_span],
                    "flags": [Flag("needs_review", "wound length not documented")],
                }
            ]
        for w in wounds:
            w["spans"].insert(0, repair_span)
        return wounds

    def _wound_region(self, low: str, start: int, end: int) -> str | None:
        """Region of the wound whose length is at [start, end): the site named in the same phrase
        ("a 3 cm laceration of the knee"), else in a neighbouring phrase without its own length
        ("laceration of the upper lip, 15 mm")."""
        cuts = [0, *sorted({m.end() for m in PHRASE_BREAK.finditer(low)}), len(low)]
        phrases = [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
        index = next((i for i, (a, b) in enumerate(phrases) if a <= start < b), None)
        if index is None:
            return None
        a, b = phrases[index]
        found = _nearest_region(self.lac["region_re"], low[a:b], start - a, end - a)
        if found:
            return found
        order = [*range(index - 1, -1, -1), *range(index + 1, len(phrases))]
        for i in order:
            a, b = phrases[i]
            if LENGTH.search(low[a:b]):
                continue
            found = _region(self.lac["region_re"], low[a:b])
            if found:
                return found
        return None

    def _lengths_elsewhere(self, note: _Note, region: str | None) -> list[dict[str, Any]]:
        """Length of the repaired wound written outside the repair paragraph (exam), same region."""
        lac = self.lac
        for sent in note.sentences:
            low = note.sentence_low(sent)
            if not lac["trigger_re"].search(low):
                continue
            for m in LENGTH.finditer(low):
                wound_region = _nearest_region(lac["region_re"], low, m.start(), m.end())
                if region and wound_region and wound_region != region:
                    continue
                value = _to_cm(float(m.group(1)), m.group(3))
                return [
                    {
                        "length": round(value, 1),
                        "region": wound_region or region or "",
                        "type": "simple",
                        "spans": [(sent.start + m.start(), sent.start + m.end())],
                        "flags": [],
                    }
                ]
        return []

    # ---- output -------------------------------------------------------------------------------------
    def _to_suggestions(self, findings: list[_Finding], text: str, sections: Sequence[Section]) -> list[Suggestion]:
        merged: dict[str, _Finding] = {}
        for f in findings:
            if f.code not in self.cpt_codes:
                continue
            if f.code in merged:
                m = merged[f.code]
                m.spans += [s for s in f.spans if s not in m.spans]
                m.units = max(m.units, f.units)
                m.score = max(m.score, f.score)
                m.flags += [x for x in f.flags if x not in m.flags]
            else:
                merged[f.code] = _Finding(f.code, list(dict.fromkeys(f.spans)), f.units, f.score, list(f.flags))
        out: list[Suggestion] = []
        for f in merged.values():
            evidence = tuple(
                Evidence(a, b, text[a:b], _section_title(sections, a), "present")
                for a, b in sorted(f.spans)[:MAX_EVIDENCE]
                if b > a
            )
            if not evidence:
                continue
            flags = list(f.flags)
            if f.units > 1 and not any(x.kind == "units" for x in flags):
                flags.append(Flag("units", f"{f.units} units"))
            out.append(
                Suggestion(
                    system="cpt",
                    code=f.code,
                    description=self.cpt_codes[f.code].description,
                    score=round(min(1.0, max(0.0, f.score)), 3),
                    evidence=evidence,
                    flags=tuple(flags),
                    units=f.units,
                )
            )
        return out

    def _em_suggestion(self, em: EmLevel, text: str, sections: Sequence[Section]) -> Suggestion:
        evidence = tuple(
            Evidence(a, b, text[a:b], _section_title(sections, a), "present") for a, b, _ in em.elements[:8]
        )
        if not evidence:
            evidence = (Evidence(0, min(len(text), 1), text[: min(len(text), 1)], _section_title(sections, 0)),)
        return Suggestion(
            system="cpt",
            code=em.code,
            description=self.cpt_codes[em.code].description,
            score=EM_SCORE,
            evidence=evidence,
            flags=(Flag("needs_review", em.message),),
        )

    def _excluded(self, ctx: _Context, suggested: set[str]) -> list[Excluded]:
        out: list[Excluded] = []
        for (start, end), (reason, codes) in sorted(ctx.excluded.items()):
            kept = tuple(c for c in codes if c in self.cpt_codes)
            out.append(Excluded(ctx.note.text[start:end], start, end, reason, kept))
        return out


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


@dataclass
class _Context:
    note: _Note
    setting: str
    date_of_service: dt.date | None
    age: int | None
    excluded: dict[tuple[int, int], tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    operative_spans: list[tuple[int, int]] | None = None


def _candidate_windows(note: _Note, prefilter: re.Pattern[str]) -> list[tuple[int, int]]:
    """Sentences holding at least one prefilter match (merged, in order)."""
    windows: list[tuple[int, int]] = []
    for m in prefilter.finditer(note.low):
        sent = note.sentence_at(m.start())
        span = (sent.start, sent.end) if sent is not None else (m.start(), m.end())
        if windows and span[0] <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], span[1]))
        else:
            windows.append(span)
    return windows


def _finditer_in(pattern: re.Pattern[str], text: str, windows: Sequence[tuple[int, int]]) -> list[re.Match[str]]:
    found: list[re.Match[str]] = []
    for lo, hi in windows:
        found.extend(pattern.finditer(text, lo, hi))
    return found


def _longest_first(matches: list[tuple[int, int, Any]]) -> list[tuple[int, int, Any]]:
    matches = sorted(matches, key=lambda m: (-(m[1] - m[0]), m[0]))
    kept: list[tuple[int, int, Any]] = []
    for m in matches:
        if all(m[1] <= k[0] or m[0] >= k[1] for k in kept):
            kept.append(m)
    return sorted(kept, key=lambda m: m[0])


def _nearest(entries: Sequence[dict[str, Any]], low: str, start: int, end: int) -> dict[str, Any] | None:
    best: tuple[int, int, dict[str, Any]] | None = None
    for order, entry in enumerate(entries):
        for m in entry["re"].finditer(low):
            distance = start - m.end() if m.end() <= start else (m.start() - end if m.start() >= end else 0)
            if best is None or (distance, order) < (best[0], best[1]):
                best = (distance, order, entry)
    return best[2] if best else None


def _first(entries: Sequence[dict[str, Any]], low: str) -> dict[str, Any] | None:
    for entry in entries:
        if entry["re"].search(low):
            return entry
    return None


def _region(regions: Sequence[tuple[str, re.Pattern[str]]], low: str) -> str | None:
    best: tuple[int, str] | None = None
    for name, pattern in regions:
        m = pattern.search(low)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), name)
    return best[1] if best else None


def _nearest_region(regions: Sequence[tuple[str, re.Pattern[str]]], low: str, start: int, end: int) -> str | None:
    best: tuple[int, str] | None = None
    for name, pattern in regions:
        for m in pattern.finditer(low):
            distance = start - m.end() if m.end() <= start else m.start() - end
            if distance < 0:
                continue
            if best is None or distance < best[0]:
                best = (distance, name)
    return best[1] if best else None


def _nearest_type(types: Sequence[tuple[str, re.Pattern[str]]], low: str, pos: int) -> str | None:
    best: tuple[int, str] | None = None
    for name, pattern in types:
        for m in pattern.finditer(low):
            distance = abs(m.start() - pos)
            if distance <= 60 and (best is None or distance < best[0]):
                best = (distance, name)
    return best[1] if best else None


def _to_cm(value: float, unit: str) -> float:
    return value / 10.0 if unit.startswith("m") else value


def _section_title(sections: Sequence[Section], offset: int) -> str:
    for s in sections:
        if s.start <= offset < s.end:
            return s.title
    return ""


def _age_from_text(low: str) -> int | None:
    head = low[:600]
    m = AGE_YEARS.search(head)
    if AGE_INFANT.search(head) and (m is None or AGE_INFANT.search(head).start() < m.start()):  # type: ignore[union-attr]
        return 0
    if m:
        return int(m.group(1) or m.group(2))
    return None
