"""HTTP load benchmark on loopback: sustained requests/s and latency percentiles of POST /v1/suggest.

By default it starts `notecoder serve --workers 2` on a free port with a fresh data folder (SQLite, default
code sets loaded on first use), makes an API key with `notecoder apikey create`, warms up, then sends
--requests suggest calls from --concurrency client threads, cycling through real notes (the development
set, or mtsamples with --notes mtsamples). It prints a table and writes JSON (--out).

    .venv/bin/python bench/bench_http.py --workers 2 --requests 400 --concurrency 8
    .venv/bin/python bench/bench_http.py --pipeline keyword     # service overhead alone (test pipeline)
    .venv/bin/python bench/bench_http.py --url http://host:8000 --key nc_...   # an already running server

--pipeline keyword runs the tests' keyword pipeline instead of the real one, to measure what the HTTP layer,
auth, audit chain and database cost on their own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
NOTE_SOURCES = {
    "dev": (SHARED / "dev" / "dev_notes.jsonl", "text"),
    "mtsamples": (SHARED / "mtsamples" / "mtsamples.jsonl", "transcription"),
}


def load_notes(source: str, limit: int = 200) -> list[dict[str, object]]:
    path, field = NOTE_SOURCES[source]
    bodies: list[dict[str, object]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            text = row.get(field)
            if not isinstance(text, str) or not text.strip():
                continue
            body: dict[str, object] = {"text": text, "setting": row.get("setting") or "outpatient"}
            if row.get("date_of_service"):
                body["date_of_service"] = row["date_of_service"]
            if isinstance(row.get("patient"), dict):
                body["patient"] = row["patient"]
            bodies.append(body)
            if len(bodies) >= limit:
                break
    return bodies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout


def start_server(workers: int, pipeline: str, data_dir: Path, database_url: str | None) -> tuple[
        subprocess.Popen[bytes], str, str, Path]:
    env = {**os.environ, "NOTECODER_DATA_DIR": str(data_dir), "NOTECODER_LOG_LEVEL": "WARNING"}
    if database_url:
        env["NOTECODER_DATABASE_URL"] = database_url
    port = free_port()
    t0 = time.perf_counter()
    cli(env, "codebook", "list")  # creates and loads the database once, before any worker
    key = cli(env, "apikey", "create", "--name", "bench", "--role", "ehr").strip().splitlines()[-1]
    if pipeline == "real":
        cmd = [sys.executable, "-m", "app.cli", "serve", "--workers", str(workers), "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "tests.e2e.test_concurrency_pg:create_keyword_app", "--factory",
               "--workers", str(workers), "--port", str(port), "--app-dir", str(REPO), "--no-access-log"]
    log = data_dir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit("the server did not become ready in 600 s")
        time.sleep(0.5)
    print(f"server ready after {time.perf_counter() - t0:.1f} s ({workers} workers, {pipeline} pipeline)",
          file=sys.stderr)
    return proc, base, key, log


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def run_load(base: str, key: str, bodies: list[dict[str, object]], requests: int, concurrency: int,
             warmup: int) -> dict[str, object]:
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        return local.client  # type: ignore[no-any-return]

    def one(i: int) -> tuple[int, float, int]:
        body = bodies[i % len(bodies)]
        started = time.perf_counter()
        try:
            r = client().post("/v1/suggest", json=body)
            status = r.status_code
            n = len(r.json().get("suggestions", [])) if status == 200 else 0
        except httpx.HTTPError:
            status, n = 0, 0
        return status, time.perf_counter() - started, n

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(warmup)))
        started = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - started
    latencies = [lat for status, lat, _ in results if status == 200]
    errors = sum(1 for status, _, _ in results if status != 200)
    statuses: dict[str, int] = {}
    for status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "requests": requests,
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "requests_per_s": round(requests / wall, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 95) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
        "errors": errors,
        "statuses": statuses,
        "suggestions_per_request": round(statistics.fmean(n for _, _, n in results), 2),
        "mean_note_chars": round(statistics.fmean(len(str(b["text"])) for b in bodies), 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--notes", choices=sorted(NOTE_SOURCES), default="dev")
    parser.add_argument("--pipeline", choices=("real", "keyword"), default="real")
    parser.add_argument("--database-url", default=None, help="e.g. postgresql+psycopg://...; default SQLite")
    parser.add_argument("--url", default=None, help="Benchmark a running server instead of starting one")
    parser.add_argument("--key", default=None, help="API key for --url")
    parser.add_argument("--out", type=Path, default=None, help="Write the result as JSON here")
    args = parser.parse_args(argv)

    bodies = load_notes(args.notes)
    proc = None
    with tempfile.TemporaryDirectory(prefix="notecoder-bench-") as tmp:
        if args.url:
            if not args.key:
                parser.error("--url needs --key")
            base, key = args.url.rstrip("/"), args.key
        else:
            proc, base, key, _log = start_server(args.workers, args.pipeline, Path(tmp), args.database_url)
        try:
            result = run_load(base, key, bodies, args.requests, args.concurrency, args.warmup)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    result.update({
        "benchmark": "http_suggest",
        "workers": args.workers if not args.url else None,
        "pipeline": args.pipeline if not args.url else "remote",
        "notes": args.notes,
        "database": "postgresql" if (args.database_url or "").startswith("postgresql") else "sqlite",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    })
    print(f"{'workers':>8} {'pipeline':>9} {'req':>5} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'errors':>7}")
    print(f"{str(result['workers']):>8} {str(result['pipeline']):>9} {result['requests']:>5} "
          f"{result['concurrency']:>5} {result['requests_per_s']:>8} {result['p50_ms']!s:>8} {result['p95_ms']!s:>8} "
          f"{result['p99_ms']!s:>8} {result['errors']:>7}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
