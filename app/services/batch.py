"""Batch re-coding: one output row per input line, in input order, resumable; in this process, a process
pool, or Ray actors. The CLI's `notecoder batch` is a thin shell around it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.schemas import SuggestRequest, SuggestResponse
from app.settings import Settings


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def code_line(pipeline: Any, obj: Any, default_setting: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Code one batch/gold object. Returns (output line, response dict or {}); never raises for bad input."""
    from nlp.errors import NlpError

    if not isinstance(obj, dict):
        return {"id": None, "error": error_body("invalid_line", "each line must be a JSON object")}, {}
    note_id = obj.get("id")
    fields = {k: obj[k] for k in ("text", "setting", "date_of_service", "patient", "code_systems", "max_suggestions")
              if k in obj and obj[k] is not None}
    if "setting" not in fields and default_setting:
        fields["setting"] = default_setting
    try:
        request = SuggestRequest(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "line"
        return {"id": note_id, "error": error_body("invalid_request", f"{where}: {first.get('msg', 'invalid')}")}, {}
    try:
        result = pipeline.code(request.to_coding_request())
    except NlpError as exc:
        return {"id": note_id, "error": error_body(exc.code, exc.message)}, {}
    response = SuggestResponse.from_result(result, str(uuid.uuid4()), note_id=str(note_id) if note_id else None)
    body = response.model_dump(mode="json")
    return {"id": note_id, "suggestions": body["suggestions"]}, body


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as fh:
        yield from enumerate(fh, start=1)


def code_raw_line(pipeline: Any, line_no: int, line: str, default_setting: str | None) -> dict[str, Any]:
    """One output row for one raw input line of a batch file."""
    if not line.strip():
        return {"id": None, "error": error_body("empty_line", f"line {line_no} is empty")}
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"id": None, "error": error_body("invalid_json", f"line {line_no}: {exc.msg}")}
    row, _ = code_line(pipeline, obj, default_setting)
    return row


def line_id(line: str) -> Any:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return obj.get("id") if isinstance(obj, dict) else None


def resume_point(out_path: Path) -> tuple[int, set[Any]]:
    """Complete lines and ids already in OUT; a torn last line (the previous run died mid-write) is cut off."""
    if not out_path.is_file():
        return 0, set()
    raw = out_path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        out_path.write_bytes(raw)
    lines = raw.decode("utf-8").splitlines()
    ids = {line_id(line) for line in lines}
    ids.discard(None)
    return len(lines), ids


Item = tuple[int, str, str | None]
"""(line number, raw line, default setting) of one input line."""

_worker_runtime: Any = None


def _init_worker(settings_values: dict[str, Any]) -> None:
    global _worker_runtime
    from app.runtime import build_runtime

    _worker_runtime = build_runtime(Settings(**settings_values))


def _work(item: Item) -> dict[str, Any]:
    line_no, line, setting = item
    return code_raw_line(_worker_runtime.pipeline, line_no, line, setting)


def code_lines(
    todo: list[tuple[int, str]],
    setting: str | None,
    *,
    settings: Settings,
    workers: int = 1,
    engine: str = "local",
    runtime_factory: Callable[[], Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Output rows in input order.

    - local, one worker: in this process (`runtime_factory` builds the runtime, with progress bars);
    - local, N workers: a pool of N processes, each with its own runtime;
    - ray: N actors, each with its own runtime, on the Ray cluster that `ray.init()` finds (RAY_ADDRESS)
      or on a local one; every node must reach the same database (`NOTECODER_DATABASE_URL`).
    """
    if not todo:
        return
    items: list[Item] = [(n, line, setting) for n, line in todo]
    # Absolute paths: pool processes and Ray workers need not share this process's working directory.
    values = settings.model_dump() | {"data_dir": settings.data_dir.resolve()}
    if engine == "ray":
        yield from _code_with_ray(items, values, workers)
        return
    if workers == 1:
        from app.runtime import build_runtime

        runtime = runtime_factory() if runtime_factory else build_runtime(settings)
        try:
            for item in items:
                yield code_raw_line(runtime.pipeline, *item)
        finally:
            runtime.close()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(values,)) as pool:
        yield from pool.map(_work, items, chunksize=4)


RAY_CHUNK = 16


def _code_with_ray(items: list[Item], settings_values: dict[str, Any], workers: int) -> Iterator[dict[str, Any]]:
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as exc:
        raise BatchError("engine_unavailable", "the ray engine needs Ray: pip install 'notecoder[ray]'") from exc

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        # One CPU per actor: --workers beyond the cluster's CPUs would wait for a free one.
        actor = ray.remote(num_cpus=1)(_RayCoder)
        pool = ActorPool([actor.remote(settings_values) for _ in range(workers)])
        chunks = [items[i:i + RAY_CHUNK] for i in range(0, len(items), RAY_CHUNK)]
        for rows in pool.map(lambda a, chunk: a.code.remote(chunk), chunks):
            yield from rows
    finally:
        if started_here:
            ray.shutdown()


class _RayCoder:
    """One Ray actor: builds its runtime once, then codes chunks of lines."""

    def __init__(self, settings_values: dict[str, Any]) -> None:
        from app.runtime import build_runtime

        self.runtime = build_runtime(Settings(**settings_values))

    def code(self, chunk: list[Item]) -> list[dict[str, Any]]:
        return [code_raw_line(self.runtime.pipeline, *item) for item in chunk]


class BatchError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
