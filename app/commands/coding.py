"""`notecoder suggest`, `batch` and `evaluate`."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from app.schemas import SuggestRequest, SuggestResponse
from app.services.batch import code_line

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
        workers: Annotated[int, typer.Option(min=1, max=256, help="Worker processes or Ray actors")] = 1,
        engine: Annotated[str, typer.Option(help="local (this machine) or ray (a Ray cluster)")] = "local",
        resume: Annotated[bool, typer.Option(help="Skip lines and ids already in OUT and append the rest")] = False,
    ) -> None:
        """Code a JSONL file of notes; a bad line gives an error line and never stops the job."""
        from app.cli import err, fail, progress_bars
        from app.services.batch import BatchError, code_lines, line_id, read_lines, resume_point
        from app.settings import Settings

        if not infile.is_file():
            raise fail(f"{infile}: no such file")
        if engine not in ("local", "ray"):
            raise fail(f"unknown engine {engine!r}; use local or ray")
        written, done_ids = resume_point(out_path) if resume else (0, set())
        # Output lines follow input order, so the first `written` input lines are done; ids catch the rest
        # (an OUT that was produced from a reordered or edited input).
        lines = list(read_lines(infile))
        todo = [(n, line) for n, line in lines if n > written and line_id(line) not in done_ids]
        skipped = len(lines) - len(todo)
        settings = Settings()
        if todo and (workers > 1 or engine == "ray"):
            _runtime().close()  # fills the database and builds the caches once, before the workers read them
        done = failed = 0
        try:
            with progress_bars() as factory, out_path.open("a" if resume else "w", encoding="utf-8") as sink:
                update = factory("notes")  # type: ignore[operator]
                update(0, len(todo))
                for row in code_lines(todo, setting, settings=settings, workers=workers, engine=engine,
                                      runtime_factory=_runtime):
                    failed += int("error" in row)
                    done += 1
                    sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                    sink.flush()  # a crash loses at most the line being written; --resume picks up after it
                    update(done, len(todo))
        except BatchError as exc:
            raise fail(exc.message) from exc
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
        from training.evaluate import billable_in, gold_request, load_gold, load_predictions
        from training.evaluate import evaluate as run_evaluation

        if not gold_path.is_file():
            raise fail(f"{gold_path}: no such file")
        gold = load_gold(gold_path)
        runtime = _runtime(use_encoder=False if no_encoder else None)
        errors = 0
        try:
            is_billable = billable_in(runtime.codebooks.codes("icd10cm"))
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
                        row, _ = code_line(pipeline, gold_request(note, max_suggestions=max_suggestions), None)
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


