"""Encoder benchmark: start-up (cold and cached), embedding throughput, link latency, memory.

    python -m bench.bench_encoder [--database-url URL] [--cache-dir DIR] [--cold] [--out bench_encoder.json]

Prints a table and writes the numbers as JSON. `--cold` builds the model export and the code index in a fresh
temporary cache (minutes); without it the given cache is used (built on first use).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

# General clinical phrasing, not taken from any evaluation note.
PHRASES = [
    "HTN", "CHF exacerbation", "T2DM with neuropathy", "COPD", "acute kidney injury", "hyperlipidemia",
    "atrial fibrillation on anticoagulation", "UTI", "community acquired pneumonia", "major depressive disorder",
    "GERD", "osteoarthritis of the right knee", "chronic low back pain", "hypothyroidism", "iron deficiency anemia",
    "obstructive sleep apnea", "CKD stage 3", "migraine without aura", "generalized anxiety disorder", "gout flare",
    "cellulitis of left lower leg", "benign prostatic hyperplasia", "vitamin D deficiency", "obesity", "asthma",
    "syncope", "chest pain", "shortness of breath", "fatigue", "dizziness",
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_encoder")
    parser.add_argument("--database-url", default="sqlite:///var/bench_encoder.db")
    parser.add_argument("--cache-dir", type=Path, default=Path("var/cache"))
    parser.add_argument("--cold", action="store_true", help="also time a first start in an empty cache")
    parser.add_argument("--out", type=Path, default=Path("var/bench_encoder.json"))
    parser.add_argument("--repeats", type=int, default=30)
    ns = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from codebooks.bootstrap import prepare_database
    from codebooks.db import make_engine
    from codebooks.repository import CodebookRepository
    from nlp.encoder import CodeLinker

    results: dict[str, float | int | str] = {}
    rss0 = _rss_mb()
    repo = CodebookRepository(prepare_database(make_engine(ns.database_url)))
    codes = repo.codes("icd10cm")
    owners = set(repo.instructions("icd10cm", "seven_chr_def"))
    results["rss_codes_mb"] = round(_rss_mb() - rss0, 1)

    if ns.cold:
        with tempfile.TemporaryDirectory(prefix="nc-bench-enc-") as tmp:
            t0 = time.perf_counter()
            CodeLinker(codes, Path(tmp), seventh_character_owners=owners)
            results["cold_start_s"] = round(time.perf_counter() - t0, 1)

    rss1 = _rss_mb()
    t0 = time.perf_counter()
    linker = CodeLinker(codes, ns.cache_dir, seventh_character_owners=owners)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    linker = CodeLinker(codes, ns.cache_dir, seventh_character_owners=owners)
    results["cached_start_s"] = round(time.perf_counter() - t0, 2)
    results["first_start_in_cache_dir_s"] = round(first, 1)
    results["targets"] = len(linker.codes)
    results["model_version"] = linker.version
    results["rss_encoder_mb"] = round(_rss_mb() - rss1, 1)

    rng = random.Random(0)
    descriptions = rng.sample([i.description for i in codes.values() if i.is_billable], 2000)
    t0 = time.perf_counter()
    linker.embed(descriptions)
    results["descriptions_per_s"] = round(len(descriptions) / (time.perf_counter() - t0), 1)
    t0 = time.perf_counter()
    linker.embed(PHRASES * 20)
    results["short_phrases_per_s"] = round(len(PHRASES) * 20 / (time.perf_counter() - t0), 1)

    for n in (1, 10, 30):
        batch = PHRASES[:n]
        linker.link(batch)
        times = []
        for _ in range(ns.repeats):
            t0 = time.perf_counter()
            linker.link(batch, k=5)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        results[f"link_{n}_median_ms"] = round(statistics.median(times), 1)
        results[f"link_{n}_p95_ms"] = round(times[int(0.95 * (len(times) - 1))], 1)
    results["peak_rss_mb"] = round(_rss_mb(), 1)

    table = Table(title=f"encoder {linker.version}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        table.add_row(key, str(value))
    Console().print(table)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
