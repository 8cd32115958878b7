"""Accuracy of coded suggestions against gold notes: the numbers behind `notecoder evaluate`.

Gold formats (detected per line):
- development set (../shared/data/dev/dev_notes.jsonl): `text`, `icd10cm: [{code, evidence: [...]}]`,
  optional `cpt` (same shape) and `must_not` (trap codes);
- CodiEsp JSONL: `text_en` (English machine translation), `icd10cm: ["Q62.11", ...]` (diagnosis codes).

Comparing codes: both sides are upper-cased and dotted ("N390" -> "N39.0"). About 100 CodiEsp codes are
cut before the seventh character ("S72.001"); a gold code that is not billable in the loaded code set
(`is_billable` given) matches any prediction that extends it, so "S72.001" accepts "S72.001A".
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GoldNote:
    id: str
    text: str
    setting: str
    date_of_service: str | None
    patient: Mapping[str, Any]
    codes: Mapping[str, tuple[str, ...]]
    evidence: Mapping[str, tuple[str, ...]]
    must_not: tuple[str, ...] = ()
    source_format: str = "dev"


def gold_request(note: GoldNote, *, max_suggestions: int = 20) -> dict[str, Any]:
    """The request (the /v1/suggest shape) `notecoder evaluate` sends for a gold note: its setting, date of
    service and patient; a CodiEsp note without CPT gold asks for ICD-10-CM only."""
    obj: dict[str, Any] = {"id": note.id, "text": note.text, "setting": note.setting,
                           "date_of_service": note.date_of_service, "patient": dict(note.patient) or None,
                           "max_suggestions": max_suggestions}
    if note.source_format == "codiesp" and not any(n for n in note.codes.get("cpt", ())):
        obj["code_systems"] = ["icd10cm"]
    return obj


def billable_in(codes: Mapping[str, Any]) -> Callable[[str], bool]:
    """`is_billable` for `evaluate` over a loaded code set (code -> CodeInfo)."""

    def is_billable(code: str) -> bool:
        info = codes.get(code)
        return bool(info and info.is_billable)

    return is_billable


@dataclass
class SystemScores:
    micro_precision: float = 0.0
    micro_recall: float = 0.0
    micro_f1: float = 0.0
    macro_precision: float = 0.0
    macro_recall: float = 0.0
    macro_f1: float = 0.0
    p_at_5: float = 0.0
    map: float = 0.0
    true_positives: int = 0
    predicted: int = 0
    gold: int = 0


@dataclass
class Report:
    notes: int
    systems: dict[str, SystemScores] = field(default_factory=dict)
    evidence_valid_rate: float = 1.0
    evidence_overlap_rate: float | None = None
    trap_violations: int = 0
    trap_violation_rate: float = 0.0
    suggestions: int = 0
    errors: int = 0
    calibration: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "notes": self.notes,
            "systems": {k: vars(v) for k, v in self.systems.items()},
            "evidence_valid_rate": self.evidence_valid_rate,
            "evidence_overlap_rate": self.evidence_overlap_rate,
            "trap_violations": self.trap_violations,
            "trap_violation_rate": self.trap_violation_rate,
            "suggestions": self.suggestions,
            "errors": self.errors,
            "calibration": self.calibration,
        }


def normalize_code(code: str) -> str:
    """Upper-case ICD-10-CM code with its dot ("n390" -> "N39.0"); CPT codes pass through."""
    c = code.strip().upper()
    if c[:1].isalpha() and len(c) > 3 and "." not in c:
        c = f"{c[:3]}.{c[3:]}"
    return c


def parse_gold_line(obj: Mapping[str, Any], line_no: int) -> GoldNote:
    """One gold note from a parsed JSON line of either format."""
    if "text_en" in obj and "text" not in obj:
        icd = tuple(dict.fromkeys(normalize_code(c) for c in obj.get("icd10cm", [])))
        return GoldNote(str(obj.get("id", line_no)), obj["text_en"], "inpatient", None, {},
                        {"icd10cm": icd}, {}, (), "codiesp")
    codes: dict[str, tuple[str, ...]] = {}
    evidence: dict[str, tuple[str, ...]] = {}
    for system in ("icd10cm", "cpt"):
        if system not in obj:
            continue
        items = []
        for item in obj[system]:
            if isinstance(item, str):
                items.append(normalize_code(item))
            else:
                code = normalize_code(item["code"])
                items.append(code)
                evidence[f"{system}:{code}"] = tuple(item.get("evidence", []))
        codes[system] = tuple(dict.fromkeys(items))
    return GoldNote(
        id=str(obj.get("id", line_no)),
        text=obj["text"],
        setting=obj.get("setting", "outpatient"),
        date_of_service=obj.get("date_of_service"),
        patient=obj.get("patient") or {},
        codes=codes,
        evidence=evidence,
        must_not=tuple(normalize_code(c) for c in obj.get("must_not", [])),
    )


def load_gold(path: Path) -> list[GoldNote]:
    """Gold notes of a JSONL file (blank lines skipped)."""
    notes = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if line.strip():
                notes.append(parse_gold_line(json.loads(line), i))
    return notes


def code_matches(pred: str, gold: str, is_billable: Callable[[str], bool] | None) -> bool:
    """A predicted code matches a gold one: the same code, or an extension of a gold code that is not billable
    (CodiEsp cuts some codes before the seventh character)."""
    if pred == gold:
        return True
    return is_billable is not None and pred.startswith(gold) and not is_billable(gold)


def _hits(preds: Sequence[str], golds: Sequence[str], is_billable: Callable[[str], bool] | None) -> list[bool]:
    """Per prediction, whether it matches a gold code not matched before (each gold counts once)."""
    used: set[str] = set()
    out = []
    for p in preds:
        g = next((g for g in golds if g not in used and code_matches(p, g, is_billable)), None)
        if g is not None:
            used.add(g)
        out.append(g is not None)
    return out


def _prf(tp: int, npred: int, ngold: int) -> tuple[float, float, float]:
    p = tp / npred if npred else 0.0
    r = tp / ngold if ngold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _spans(text: str, needle: str) -> list[tuple[int, int]]:
    out, start = [], 0
    low, n = text.lower(), needle.lower()
    while n and (i := low.find(n, start)) >= 0:
        out.append((i, i + len(n)))
        start = i + 1
    return out


def evaluate(
    gold: Sequence[GoldNote],
    predictions: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    is_billable: Callable[[str], bool] | None = None,
    errors: int = 0,
) -> Report:
    """Scores of `predictions` (note id -> ranked suggestion dicts as the API returns them) on `gold`."""
    report = Report(notes=len(gold), errors=errors)
    systems = sorted({s for n in gold for s in n.codes})
    per_code: dict[str, dict[str, list[int]]] = {s: defaultdict(lambda: [0, 0, 0]) for s in systems}
    totals = {s: [0, 0, 0] for s in systems}
    p5 = {s: [] for s in systems}
    aps = {s: [] for s in systems}
    valid = total_ev = overlap = overlap_total = 0
    calibration: list[tuple[float, bool]] = []
    for note in gold:
        suggestions = list(predictions.get(note.id, []))
        for s in suggestions:
            report.suggestions += 1
            ok = all(note.text[e["start"] : e["end"]] == e["text"] for e in s.get("evidence", []))
            has = bool(s.get("evidence"))
            valid += int(ok and has)
            total_ev += 1
            if normalize_code(s["code"]) in note.must_not:
                report.trap_violations += 1
        for system in systems:
            golds = list(note.codes[system])
            ranked = [s for s in suggestions if s.get("system", "icd10cm") == system]
            preds = list(dict.fromkeys(normalize_code(s["code"]) for s in ranked))
            hits = _hits(preds, golds, is_billable)
            tp = sum(hits)
            t = totals[system]
            t[0] += tp
            t[1] += len(preds)
            t[2] += len(golds)
            for p, h in zip(preds, hits, strict=True):
                per_code[system][p][1] += 1
                per_code[system][p][0] += int(h)
            matched_golds = [g for g in golds if any(code_matches(p, g, is_billable) for p in preds)]
            for g in golds:
                per_code[system][g][2] += 1
            for g in set(matched_golds) - set(preds):
                # prefix matches credit the gold code's row, not the longer predicted code's
                per_code[system][g][0] += 1
            p5[system].append(sum(hits[:5]) / 5)
            if golds:
                precisions = [sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h]
                aps[system].append(sum(precisions) / len(golds))
            for s, h in zip(ranked, hits, strict=False):
                if "score" in s:
                    calibration.append((float(s["score"]), h))
            # Evidence overlap: a correct code whose evidence touches a gold evidence string.
            for s, h in zip(ranked, hits, strict=False):
                key = f"{system}:{normalize_code(s['code'])}"
                gold_ev = note.evidence.get(key)
                if not h or not gold_ev:
                    continue
                overlap_total += 1
                gold_spans = [sp for ev in gold_ev for sp in _spans(note.text, ev)]
                if any(e["start"] < ge and gs < e["end"] for e in s.get("evidence", []) for gs, ge in gold_spans):
                    overlap += 1
    for system in systems:
        tp, npred, ngold = totals[system]
        scores = SystemScores(true_positives=tp, predicted=npred, gold=ngold)
        scores.micro_precision, scores.micro_recall, scores.micro_f1 = _prf(tp, npred, ngold)
        rows = [_prf(*v) for v in per_code[system].values()]
        if rows:
            scores.macro_precision = sum(r[0] for r in rows) / len(rows)
            scores.macro_recall = sum(r[1] for r in rows) / len(rows)
            scores.macro_f1 = sum(r[2] for r in rows) / len(rows)
        scores.p_at_5 = sum(p5[system]) / len(p5[system]) if p5[system] else 0.0
        scores.map = sum(aps[system]) / len(aps[system]) if aps[system] else 0.0
        report.systems[system] = scores
    report.evidence_valid_rate = valid / total_ev if total_ev else 1.0
    report.evidence_overlap_rate = overlap / overlap_total if overlap_total else None
    report.trap_violation_rate = report.trap_violations / report.suggestions if report.suggestions else 0.0
    report.calibration = calibration_table(calibration)
    return report


def calibration_table(pairs: Iterable[tuple[float, bool]], bins: int = 5) -> list[dict[str, float]]:
    """Mean score vs. observed acceptance rate per score bin (reliability table)."""
    buckets: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for score, hit in pairs:
        buckets[min(bins - 1, int(score * bins))].append((score, hit))
    out = []
    for i, b in enumerate(buckets):
        if b:
            out.append({"low": i / bins, "high": (i + 1) / bins, "count": len(b),
                        "mean_score": sum(s for s, _ in b) / len(b), "accepted_rate": sum(h for _, h in b) / len(b)})
    return out


def load_predictions(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Batch output lines ({"id", "suggestions"}) keyed by id; error lines give no suggestions."""
    out: dict[str, list[dict[str, Any]]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                out[str(obj.get("id"))] = list(obj.get("suggestions") or [])
    return out
