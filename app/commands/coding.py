"""`notecoder suggest`, `batch` and `evaluate`."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from app.schemas import SuggestRequest, SuggestResponse

SettingOpt = Annotated[str | None, typer.Option(help="outpatient (default), inpatient or emergency")]


def _runtime(use_encoder: bool | None = None):  # type: ignore[no-untyped-def]
    from app.cli import fail, progress_bars
    from app.runtime import build_runtime
    from app.settings import Settings
    from codebooks.errors import CodebookError

    try:
        with progress_bars() as factory:
            return build_runtime(Settings(), progress=factory, use_encoder=use_encoder)  # type: ignore[arg-type]
    except CodebookError as exc:
        raise fail(exc.message, 1) from exc


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def code_line(pipeline: Any, obj: Any, default_setting: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Code one batch/gold object. Returns (output line, response dict or {}); never raises for bad input."""
    from nlp.errors import NlpError

    if not isinstance(obj, dict):
        return {"id": None, "error": _error("invalid_line", "each line must be a JSON object")}, {}
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
        return {"id": note_id, "error": _error("invalid_request", f"{where}: {first.get('msg', 'invalid')}")}, {}
    try:
        result = pipeline.code(request.to_coding_request())
    except NlpError as exc:
        return {"id": note_id, "error": _error(exc.code, exc.message)}, {}
    response = SuggestResponse.from_result(result, str(uuid.uuid4()), note_id=str(note_id) if note_id else None)
    body = response.model_dump(mode="json")
    return {"id": note_id, "suggestions": body["suggestions"]}, body


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as fh:
        yield from enumerate(fh, start=1)


def code_raw_line(pipeline: Any, line_no: int, line: str, default_setting: str | None) -> dict[str, Any]:
    """One output row for one raw input line of a batch file."""
    if not line.strip():
        return {"id": None, "error": _error("empty_line", f"line {line_no} is empty")}
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"id": None, "error": _error("invalid_json", f"line {line_no}: {exc.msg}")}
    row, _ = code_line(pipeline, obj, default_setting)
    return row


def _line_id(line: str) -> Any:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return obj.get("id") if isinstance(obj, dict) else None


def _resume_point(out_path: Path) -> tuple[int, set[Any]]:
    """Complete lines and ids already in OUT; a torn last line (the previous run died mid-write) is cut off."""
    if not out_path.is_file():
        return 0, set()
    raw = out_path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        out_path.write_bytes(raw)
    lines = raw.decode("utf-8").splitlines()
    ids = {_line_id(line) for line in lines}
    ids.discard(None)
    return len(lines), ids


_worker_runtime: Any = None


def _init_worker() -> None:
    global _worker_runtime
    from app.runtime import build_runtime
    from app.settings import Settings

    _worker_runtime = build_runtime(Settings())


def _work(item: tuple[int, str, str | None]) -> dict[str, Any]:
    line_no, line, setting = item
    return code_raw_line(_worker_runtime.pipeline, line_no, line, setting)


def _code_lines(todo: list[tuple[int, str]], setting: str | None, workers: int) -> Iterator[dict[str, Any]]:
    """Rows in input order: in this process for one worker, else in a pool of processes."""
    if not todo:
        return
    if workers == 1:
        runtime = _runtime()
        try:
            for line_no, line in todo:
                yield code_raw_line(runtime.pipeline, line_no, line, setting)
        finally:
            runtime.close()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _runtime().close()  # builds the dictionary and encoder caches once, before the workers read them
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        yield from pool.map(_work, [(n, line, setting) for n, line in todo], chunksize=4)


def register(app: typer.Typer) -> None:
    """Add the coding commands to `app`."""

    @app.command("suggest")
    def suggest(
        file: Annotated[str, typer.Argument(help="Note file (plain text), or - for stdin")],
        setting: SettingOpt = None,
        date: Annotated[str | None, typer.Option(help="Date of service, YYYY-MM-DD")] = None,
        age: Annotated[int | None, typer.Option(min=0, max=130)] = None,
        sex: Annotated[str | None, typer.Option(help="female, male, other, unknown (or F/M)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the /v1/suggest response JSON")] = False,
    ) -> None:
        """Code one note: ranked ICD-10-CM (and CPT) suggestions with evidence."""
        from app.cli import err, fail, out
        from nlp.errors import NlpError

        if file == "-":
            text = sys.stdin.read()
        else:
            path = Path(file)
            if not path.is_file():
                raise fail(f"{file}: no such file")
            text = path.read_text(encoding="utf-8", errors="replace")
        fields: dict[str, Any] = {"text": text, "patient": {"age": age, "sex": sex}}
        if setting:
            fields["setting"] = setting
        if date:
            fields["date_of_service"] = date
        try:
            request = SuggestRequest(**fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise fail(f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg')}") from exc
        runtime = _runtime()
        try:
            result = runtime.pipeline.code(request.to_coding_request())
        except NlpError as exc:
            raise fail(f"{exc.code}: {exc.message}", 1) from exc
        finally:
            runtime.close()
        response = SuggestResponse.from_result(result, str(uuid.uuid4()))
        if as_json:
            print(response.model_dump_json())
            return
        table = Table("rank", "system", "code", "score", "description", "evidence")
        for s in response.suggestions:
            ev = "; ".join(f"{e.section or '-'}: {e.text}" for e in s.evidence[:2])
            table.add_row(str(s.rank), s.system, s.code, f"{s.score:.2f}", s.description, ev)
        out.print(table)
        if response.excluded:
            out.print(f"{len(response.excluded)} mention(s) left out: "
                      + ", ".join(sorted({x.reason for x in response.excluded})), highlight=False)
        for w in response.warnings:
            err.print(f"[yellow]warning:[/yellow] {w}")

    @app.command("batch")
    def batch(
        infile: Annotated[Path, typer.Argument(help="JSONL: one {id, text, setting?, ...} per line")],
        out_path: Annotated[Path, typer.Option("--out", help="Output JSONL, one line per input line")],
        setting: SettingOpt = None,
        workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes, each with its own pipeline")] = 1,
        resume: Annotated[bool, typer.Option(help="Skip ids already in OUT and append the rest")] = False,
    ) -> None:
        """Code a JSONL file of notes; a bad line gives an error line and never stops the job."""
        from app.cli import err, fail, progress_bars

        if not infile.is_file():
            raise fail(f"{infile}: no such file")
        written, done_ids = _resume_point(out_path) if resume else (0, set())
        # Output lines follow input order, so the first `written` input lines are done; ids catch the rest
        # (an OUT that was produced from a reordered or edited input).
        todo = [(n, line) for n, line in _read_lines(infile) if n > written and _line_id(line) not in done_ids]
        skipped = sum(1 for _ in _read_lines(infile)) - len(todo)
        done = failed = 0
        with progress_bars() as factory, out_path.open("a" if resume else "w", encoding="utf-8") as sink:
            update = factory("notes")  # type: ignore[operator]
            update(0, len(todo))
            for row in _code_lines(todo, setting, workers):
                failed += int("error" in row)
                done += 1
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()  # a crash loses at most the line being written; --resume picks up after it
                update(done, len(todo))
        resumed = f", {skipped} already done" if resume else ""
        err.print(f"{done} line(s), {failed} error(s){resumed} -> {out_path}")

    @app.command("evaluate")
    def evaluate_cmd(
        gold_path: Annotated[Path, typer.Argument(help="Gold JSONL (dev-set format or CodiEsp)")],
        predictions: Annotated[Path | None, typer.Option(help="Score this batch output instead of running")] = None,
        threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0,
                                                        help="Override the suggestion threshold")] = None,
        max_suggestions: Annotated[int, typer.Option(min=1, max=200)] = 20,
        no_encoder: Annotated[bool, typer.Option("--no-encoder", help="Dictionary and rules only")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Precision/recall/F1 (micro, macro), P@5, MAP, evidence checks and trap violations on gold notes."""
        from app.cli import fail, out, progress_bars
        from training.evaluate import evaluate as run_evaluation
        from training.evaluate import load_gold, load_predictions

        if not gold_path.is_file():
            raise fail(f"{gold_path}: no such file")
        gold = load_gold(gold_path)
        runtime = _runtime(use_encoder=False if no_encoder else None)
        errors = 0
        try:
            codes = runtime.codebooks.codes("icd10cm")

            def is_billable(code: str) -> bool:
                info = codes.get(code)
                return bool(info and info.is_billable)

            if predictions is not None:
                preds = load_predictions(predictions)
            else:
                pipeline = runtime.pipeline
                if threshold is not None:
                    pipeline.ranker.threshold = threshold
                preds = {}
                with progress_bars() as factory:
                    update = factory("notes")  # type: ignore[operator]
                    for i, note in enumerate(gold, start=1):
                        obj = {"id": note.id, "text": note.text, "setting": note.setting,
                               "date_of_service": note.date_of_service, "patient": dict(note.patient) or None,
                               "max_suggestions": max_suggestions}
                        if not any(n for n in note.codes.get("cpt", ())) and note.source_format == "codiesp":
                            obj["code_systems"] = ["icd10cm"]
                        row, _ = code_line(pipeline, obj, None)
                        errors += int("error" in row)
                        preds[note.id] = row.get("suggestions", [])
                        update(i, len(gold))
        finally:
            runtime.close()
        report = run_evaluation(gold, preds, is_billable=is_billable, errors=errors)
        if as_json:
            print(json.dumps(report.as_dict(), indent=2))
            return
        systems = list(report.systems)
        table = Table("metric", *systems)
        for label, attr in (("micro precision", "micro_precision"), ("micro recall", "micro_recall"),
                            ("micro F1", "micro_f1"), ("macro precision", "macro_precision"),
                            ("macro recall", "macro_recall"), ("macro F1", "macro_f1"), ("P@5", "p_at_5"),
                            ("MAP", "map")):
            table.add_row(label, *(f"{getattr(report.systems[s], attr):.3f}" for s in systems))
        table.add_row("TP / predicted / gold", *(
            f"{report.systems[s].true_positives}/{report.systems[s].predicted}/{report.systems[s].gold}"
            for s in systems))
        out.print(table)
        overlap = "n/a" if report.evidence_overlap_rate is None else f"{report.evidence_overlap_rate:.3f}"
        out.print(f"notes {report.notes}  suggestions {report.suggestions}  errors {report.errors}  "
                  f"valid evidence {report.evidence_valid_rate:.3f}  evidence overlap {overlap}  "
                  f"trap violations {report.trap_violations} ({report.trap_violation_rate:.3f})", highlight=False)


