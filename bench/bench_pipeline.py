"""Latency, start-up and memory of the coding pipeline on MTSamples notes.

    python -m bench.bench_pipeline [--notes 200] [--encoder] [--out bench-pipeline.json]

Uses the runtime the service uses (NOTECODER_* settings: database, cache). Start-up is measured twice
in one process: cold (dictionary built) and warm (dictionary from the cache under settings.cache_dir).
Per-note time is also reported per 250 words, the budget's unit. Peak RSS is the process maximum.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mtsamples" / "mtsamples.jsonl"


def _notes(path: Path, n: int) -> list[str]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            text = (json.loads(line).get("transcription") or "").strip()
            if len(text.split()) >= 50:
                out.append(text)
            if len(out) >= n:
                break
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=200)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--encoder", action="store_true", help="include the encoder (needs its cache)")
    parser.add_argument("--out", type=Path, default=Path("bench-pipeline.json"))
    args = parser.parse_args(argv)

    from app.runtime import build_runtime
    from app.settings import Settings
    from nlp.types import CodingRequest

    settings = Settings()
    t0 = time.perf_counter()
    runtime = build_runtime(settings, use_encoder=args.encoder)
    first_start = time.perf_counter() - t0
    cold_dictionary = not runtime.pipeline.startup.dictionary_cached
    runtime.close()
    t0 = time.perf_counter()
    runtime = build_runtime(settings, use_encoder=args.encoder)
    warm_start = time.perf_counter() - t0

    notes = _notes(args.data, args.notes)
    runtime.pipeline.code(CodingRequest(text=notes[0]))  # first call pays lazy spaCy/medSpaCy set-up
    per_note, per_250 = [], []
    suggestions = 0
    for text in notes:
        t = time.perf_counter()
        result = runtime.pipeline.code(CodingRequest(text=text, setting="outpatient"))
        ms = (time.perf_counter() - t) * 1000
        per_note.append(ms)
        per_250.append(ms * 250 / max(1, len(text.split())))
        suggestions += len(result.suggestions)
    runtime.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    words = [len(t.split()) for t in notes]
    report = {
        "notes": len(notes),
        "median_words": statistics.median(words),
        "median_ms": statistics.median(per_note),
        "p95_ms": _pct(per_note, 0.95),
        "max_ms": max(per_note),
        "median_ms_per_250_words": statistics.median(per_250),
        "p95_ms_per_250_words": _pct(per_250, 0.95),
        "startup_first_s": first_start,
        "startup_first_dictionary_built": cold_dictionary,
        "startup_cached_s": warm_start,
        "peak_rss_mb": peak_mb,
        "suggestions_per_note": suggestions / max(1, len(notes)),
        "encoder": args.encoder,
        "rules_version": runtime.pipeline.rules_version,
    }
    width = max(len(k) for k in report)
    for key, value in report.items():
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
