"""Calibrate an encoder in the pipeline, on CodiEsp train documents it was not trained on.

    python -m training.calibrate --model nlp/models/minilm-icd-lora-v3 --skip 400 --docs 100 --write
    python -m training.calibrate --model none --gold ../shared/data/dev/dev_notes.jsonl --skip 0 --floors model

Two numbers decide what the pipeline does with the encoder's links, and both are stored in the model's
`model.json`, so each model carries its own:

- `link_calibration`: (cosine, precision) knots. Every link the pipeline keeps on the calibration notes (a code
  only the encoder found, the "similarity" flag) is judged right or wrong against the gold codes, and the share
  of right ones is fitted as a non-decreasing function of the cosine (pool-adjacent-violators over bins). An
  encoder suggestion's score is this estimate, so a link scores what it is worth, whatever the model's cosine
  scale.
- `min_cosine`: the floor under which links are dropped, the best micro F1 (at the suggestion threshold) plus
  MAP (full ranking) of a sweep over candidate floors with that calibration in place.

The encoder's links are computed once and reused for every floor. Without `--write` the report is printed only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_FLOORS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
# Links are collected from this cosine up when the calibration is fitted.
PROBE_FLOOR = 0.25
SIMILARITY_FLAG = "similarity"


@dataclass
class MemoScorer:
    """A scorer that remembers the links of each phrase and carries the floor and calibration under test."""

    inner: Any
    min_cosine: float | None = None
    calibration: Sequence[tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        self.version = str(self.inner.version)
        self._memo: dict[str, list[tuple[str, float]]] = {}

    def link(self, phrases: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        todo = [p for p in dict.fromkeys(phrases) if p not in self._memo]
        if todo:
            for phrase, top in zip(todo, self.inner.link(todo, k=max(k, 5)), strict=True):
                self._memo[phrase] = list(top)
        return [self._memo[p][:k] for p in phrases]

    def cosine(self, phrase: str, code: str) -> float | None:
        """The cosine with which `phrase` was linked to `code` (dots ignored), if it was."""
        flat = code.replace(".", "")
        return next((cos for c, cos in self._memo.get(phrase, ()) if c.replace(".", "") == flat), None)


def coding_request(note: Any, *, max_suggestions: int = 20) -> Any:
    """The pipeline request for a gold note: `notecoder evaluate`'s (training/evaluate.py: gold_request) as the
    API would read it (gold files are trusted, so the API's validation is not repeated)."""
    import datetime as dt

    from nlp.types import CODE_SYSTEMS, CodingRequest, Patient, normalise_sex
    from training.evaluate import gold_request

    obj = gold_request(note, max_suggestions=max_suggestions)
    patient = obj["patient"] or {}
    return CodingRequest(
        text=obj["text"],
        setting=obj["setting"],
        date_of_service=dt.date.fromisoformat(obj["date_of_service"]) if obj["date_of_service"] else None,
        patient=Patient(age=patient.get("age"), sex=normalise_sex(patient.get("sex"))),  # type: ignore[arg-type]
        code_systems=tuple(obj.get("code_systems", CODE_SYSTEMS)),
        max_suggestions=obj["max_suggestions"],
    )


def _run(pipeline: Any, notes: Sequence[Any], max_suggestions: int = 20) -> dict[str, list[Any]]:
    return {n.id: [s for s in pipeline.code(coding_request(n, max_suggestions=max_suggestions)).suggestions
                   if s.system == "icd10cm"] for n in notes}


def _as_rows(suggestions: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"code": s.code, "system": s.system, "score": s.score,
             "evidence": [{"start": e.start, "end": e.end, "text": e.text} for e in s.evidence]} for s in suggestions]


def isotonic_knots(points: Sequence[tuple[float, bool]], *, min_bin: int = 25,
                   max_precision: float = 0.95) -> list[tuple[float, float]]:
    """(cosine, precision) knots of a non-decreasing fit to (cosine, was right) points.

    Points are cut into bins of at least `min_bin` links in cosine order; adjacent bins that violate the order
    are pooled (pool-adjacent-violators, weighted by size). Each knot is a pooled block's mean cosine and its
    share of right links, capped at `max_precision` (a similarity link is never certain).
    """
    ordered = sorted(points)
    if not ordered:
        return []
    bins: list[list[tuple[float, bool]]] = [ordered[i : i + min_bin] for i in range(0, len(ordered), min_bin)]
    if len(bins) > 1 and len(bins[-1]) < min_bin:
        bins[-2].extend(bins.pop())
    # Blocks of [sum of cosines, right links, links].
    blocks: list[list[float]] = []
    for b in bins:
        blocks.append([sum(c for c, _ in b), float(sum(ok for _, ok in b)), float(len(b))])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] > blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last, strict=True)]
    knots = [(round(s / n, 4), round(min(max_precision, ok / n), 4)) for s, ok, n in blocks]
    out: list[tuple[float, float]] = []
    for c, p in knots:
        if out and c <= out[-1][0]:
            continue
        out.append((c, max(p, out[-1][1]) if out else p))
    return out


def fit_calibration(
    candidate_source: Any,
    memo: MemoScorer,
    notes: Sequence[Any],
    *,
    cache_dir: Path | None = None,
    service_detector: Any | None = None,
    probe_floor: float = PROBE_FLOOR,
    min_bin: int = 25,
) -> tuple[list[tuple[float, float]], int]:
    """Knots of the precision of the pipeline's similarity-only suggestions by cosine, and how many links
    they were fitted on."""
    from nlp.config import PipelineConfig
    from nlp.pipeline import build_pipeline
    from training.evaluate import billable_in, code_matches

    is_billable = billable_in(candidate_source.codes("icd10cm"))
    memo.min_cosine, memo.calibration = probe_floor, None
    pipeline = build_pipeline(PipelineConfig(threshold=0.0, cache_dir=cache_dir), candidate_source, scorer=memo,
                              service_detector=service_detector)
    points: list[tuple[float, bool]] = []
    by_note = {n.id: n for n in notes}
    for note_id, suggestions in _run(pipeline, notes, max_suggestions=200).items():
        golds = by_note[note_id].codes.get("icd10cm", ())
        for s in suggestions:
            if not any(f.kind == SIMILARITY_FLAG for f in s.flags):
                continue
            cosines = [c for c in (memo.cosine(e.text, s.code) for e in s.evidence) if c is not None]
            if cosines:
                points.append((max(cosines), any(code_matches(s.code, g, is_billable) for g in golds)))
    return isotonic_knots(points, min_bin=min_bin), len(points)


def sweep(
    candidate_source: Any,
    scorer: Any,
    notes: Sequence[Any],
    floors: Sequence[float | None],
    *,
    threshold: float = 0.4,
    cache_dir: Path | None = None,
    service_detector: Any | None = None,
    calibration: Sequence[tuple[float, float]] | None = None,
) -> list[dict[str, Any]]:
    """Micro F1 at `threshold` and MAP (threshold 0) of the pipeline for each floor, ICD-10-CM only.

    `scorer` None runs the dictionary and rules alone (one row). A floor of None uses the scorer's own
    (model.json "min_cosine", else the rules' default); `calibration` replaces the scorer's own when given.
    """
    from nlp.config import PipelineConfig
    from nlp.pipeline import build_pipeline
    from training.evaluate import billable_in, evaluate

    is_billable = billable_in(candidate_source.codes("icd10cm"))
    memo = scorer if isinstance(scorer, MemoScorer) or scorer is None else MemoScorer(scorer)
    rows = []
    for floor in floors if memo is not None else [None]:
        if memo is not None:
            memo.min_cosine = floor if floor is not None else memo.inner.min_cosine
            memo.calibration = calibration if calibration is not None else memo.inner.calibration
        pipeline = build_pipeline(PipelineConfig(threshold=0.0, cache_dir=cache_dir), candidate_source,
                                  scorer=memo, service_detector=service_detector)
        ranked = {k: _as_rows(v) for k, v in _run(pipeline, notes).items()}
        full = evaluate(notes, ranked, is_billable=is_billable).systems["icd10cm"]
        shown = {k: [s for s in v if s["score"] >= threshold] for k, v in ranked.items()}
        cut = evaluate(notes, shown, is_billable=is_billable).systems["icd10cm"]
        rows.append({"floor": None if memo is None else memo.min_cosine, "f1": round(cut.micro_f1, 4),
                     "precision": round(cut.micro_precision, 4), "recall": round(cut.micro_recall, 4),
                     "map": round(full.map, 4), "suggestions": sum(len(v) for v in ranked.values())})
    return rows


def best_floor(rows: Sequence[Mapping[str, Any]]) -> float:
    """The floor with the best F1 + MAP (the higher floor on a tie: fewer weak links)."""
    return float(max(rows, key=lambda r: (round(r["f1"] + r["map"], 4), r["floor"]))["floor"])


def write_calibration(model_dir: Path, floor: float, knots: Sequence[tuple[float, float]],
                      report: Mapping[str, Any]) -> None:
    """Store the floor, the knots (none when the fit found no links) and how they were measured in
    `model_dir/model.json`."""
    path = Path(model_dir) / "model.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["min_cosine"] = floor
    if knots:
        meta["link_calibration"] = [list(k) for k in knots]
    else:  # no similarity link on the calibration notes: the model stays uncalibrated
        meta.pop("link_calibration", None)
    meta["calibration_report"] = dict(report)
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def calibrate(
    candidate_source: Any,
    scorer: Any,
    notes: Sequence[Any],
    floors: Sequence[float],
    *,
    cache_dir: Path | None = None,
    service_detector: Any | None = None,
    min_bin: int = 25,
) -> dict[str, Any]:
    """Fit the calibration, then sweep the floors with it: the report `write_calibration` stores."""
    memo = MemoScorer(scorer)
    knots, n_links = fit_calibration(candidate_source, memo, notes, cache_dir=cache_dir,
                                     service_detector=service_detector, min_bin=min_bin)
    rows = sweep(candidate_source, memo, notes, floors, cache_dir=cache_dir, service_detector=service_detector,
                 calibration=knots)
    return {"model": memo.version, "notes": len(notes), "links": n_links, "link_calibration": knots,
            "rows": rows, "best_floor": best_floor(rows)}


@contextmanager
def pipeline_inputs(database_url: str, cache_dir: Path, model: str | Path = "") -> Iterator[tuple[Any, Any, Any]]:
    """(code-set repository, linker, CPT service detector) over `database_url` (an SQLite file is created and
    filled on first use). `model`: a fine-tuned model folder; "" the shipped one; "base" the base model;
    "none" no linker (None)."""
    from codebooks.bootstrap import prepare_database
    from codebooks.db import make_engine
    from codebooks.repository import CodebookRepository
    from nlp.components.services import ServiceDetector
    from nlp.encoder import open_linker

    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url)
    try:
        codebooks = CodebookRepository(prepare_database(engine))
        linker = None
        if str(model).strip().lower() != "none":
            linker = open_linker(codebooks.codes("icd10cm"), cache_dir, model,
                                 seventh_character_owners=codebooks.instructions("icd10cm", "seven_chr_def").keys())
        detector = ServiceDetector(codebooks.codes("cpt")) if codebooks.versions("cpt") else None
        yield codebooks, linker, detector
    finally:
        engine.dispose()


def calibrate_model_dir(model_dir: Path, notes: Sequence[Any], *, gold: str, database_url: str, cache_dir: Path,
                        floors: Sequence[float] = DEFAULT_FLOORS) -> dict[str, Any]:
    """Fit a fine-tuned model's calibration and floor on `notes` (described by `gold`) and store them in its
    model.json: what `--write` and the end of `python -m training.train` do."""
    with pipeline_inputs(database_url, cache_dir, model_dir) as (codebooks, linker, detector):
        report = calibrate(codebooks, linker, notes, floors, cache_dir=cache_dir, service_detector=detector)
    report["gold"] = gold
    write_calibration(model_dir, report["best_floor"], report["link_calibration"],
                      {k: v for k, v in report.items() if k != "link_calibration"})
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="",
                        help="adapter folder; 'base' for the base model; 'none' for no encoder (default: shipped)")
    parser.add_argument("--gold", type=Path, default=Path("../shared/data/codiesp/codiesp_train.jsonl"),
                        help="gold notes (dev-set or CodiEsp JSONL)")
    parser.add_argument("--skip", type=int, default=400, help="notes skipped first (those used for training)")
    parser.add_argument("--docs", type=int, default=100, help="notes used after the skipped ones")
    parser.add_argument("--floors", default=",".join(str(f) for f in DEFAULT_FLOORS),
                        help="cosine floors to try; 'model' for the model's own")
    parser.add_argument("--fit", action="store_true", help="fit the calibration first (else: the model's own)")
    parser.add_argument("--write", action="store_true", help="fit, and store the result in the model's model.json")
    parser.add_argument("--calibration", type=Path,
                        help="apply the knots of an earlier --fit report (JSON) instead of the model's; with "
                             "--floors model, its floor too")
    parser.add_argument("--database-url", default="sqlite:///var/notecoder.db",
                        help="code-set database (created and filled on first use)")
    parser.add_argument("--cache-dir", type=Path, default=Path("var/cache"), help="dictionary and encoder caches")
    ns = parser.parse_args(argv)
    choice = ns.model.strip()
    if ns.write and choice.lower() in ("base", "none"):
        parser.error("--write needs a fine-tuned model folder (--model DIR)")
    if ns.calibration is not None and (ns.fit or ns.write or choice.lower() == "none"):
        parser.error("--calibration applies an earlier fit to a model: not with --fit, --write or --model none")

    from nlp.encoder import default_model_dir
    from training.evaluate import load_gold

    notes = load_gold(ns.gold)[ns.skip : ns.skip + ns.docs]
    gold = f"{ns.gold} [{ns.skip}:{ns.skip + len(notes)}]"
    # The floor is what a fit chooses: "model" (or nothing) sweeps the default candidates.
    fit_floors = [float(f) for f in ns.floors.split(",") if f.strip() and f.strip() != "model"] or list(DEFAULT_FLOORS)
    if ns.write:
        report = calibrate_model_dir(Path(choice) if choice else default_model_dir(), notes, gold=gold,
                                     database_url=ns.database_url, cache_dir=ns.cache_dir, floors=fit_floors)
        print(json.dumps(report, indent=2))
        return 0
    with pipeline_inputs(ns.database_url, ns.cache_dir, choice) as (codebooks, linker, detector):
        if linker is not None and ns.fit:
            report = calibrate(codebooks, linker, notes, fit_floors, cache_dir=ns.cache_dir,
                               service_detector=detector)
        else:
            chosen: list[float | None] = [None if f.strip() == "model" else float(f)
                                          for f in ns.floors.split(",") if f.strip()]
            knots = None
            if ns.calibration is not None and linker is not None:
                earlier = json.loads(ns.calibration.read_text(encoding="utf-8"))
                knots = [tuple(k) for k in earlier["link_calibration"]]
                chosen = [float(earlier["best_floor"]) if f is None else f for f in chosen]
            rows = sweep(codebooks, linker, notes, chosen, cache_dir=ns.cache_dir, service_detector=detector,
                         calibration=knots)
            report = {"model": linker.version if linker else "none", "notes": len(notes), "rows": rows}
    report["gold"] = gold
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
