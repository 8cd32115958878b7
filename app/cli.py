"""The `notecoder` command."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from codebooks.errors import CodebookError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="notecoder: clinical notes to ICD-10-CM and CPT codes."
)
codebook_app = typer.Typer(no_args_is_help=True, help="Code-set database management.")
app.add_typer(codebook_app, name="codebook")

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@contextlib.contextmanager
def progress_bars() -> Iterator[object]:
    """A factory of progress callbacks, one bar per label, drawn on stderr."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
        console=err, transient=False,
    ) as bars:
        tasks: dict[str, int] = {}

        def factory(label: str):  # type: ignore[no-untyped-def]
            tasks[label] = bars.add_task(label, total=None)

            def update(done: int, total: int) -> None:
                bars.update(tasks[label], completed=done, total=total)

            return update

        yield factory


def open_codebooks(settings: Settings, *, load_defaults: bool = True) -> sessionmaker[Session]:
    from codebooks.bootstrap import prepare_database
    from codebooks.db import make_engine, migrate, session_factory

    engine = make_engine(settings.resolved_database_url)
    if not load_defaults:
        migrate(engine)
        return session_factory(engine)
    with progress_bars() as factory:
        return prepare_database(engine, progress=factory)  # type: ignore[arg-type]


def repository(settings: Settings):  # type: ignore[no-untyped-def]
    from codebooks.repository import CodebookRepository

    return CodebookRepository(open_codebooks(settings))


# ---- codebook -----------------------------------------------------------------------------
@codebook_app.command("load")
def codebook_load(force: Annotated[bool, typer.Option(help="Reload even if already loaded")] = False) -> None:
    """Load the default code sets: ICD-10-CM FY2026 tabular and the curated CPT list."""
    from codebooks.bootstrap import load_defaults

    sessions = open_codebooks(Settings(), load_defaults=False)
    with progress_bars() as factory:
        reports = load_defaults(sessions, force=force, progress=factory)  # type: ignore[arg-type]
    for r in reports:
        state = "already loaded" if r.skipped else f"{r.codes} codes, {r.terms} terms, {r.instructions} notes"
        out.print(f"{r.system} {r.version}: {state} ({r.seconds:.1f} s)")


@codebook_app.command("list")
def codebook_list() -> None:
    """List the loaded code-set versions."""
    table = Table("system", "version", "effective", "codes", "source")
    for v in repository(Settings()).versions():
        to = v.effective_to.isoformat() if v.effective_to else "open"
        label = f"{v.version} (licensed)" if v.is_licensed else v.version
        table.add_row(v.system, label, f"{v.effective_from.isoformat()} .. {to}", str(v.code_count), v.source)
    out.print(table)


@codebook_app.command("lookup")
def codebook_lookup(
    code: str,
    system: Annotated[str | None, typer.Option(help="icd10cm, cpt or hcpcs; guessed from the code")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one code: description, billable or not, hierarchy and tabular instructions."""
    from codebooks.repository import guess_systems

    repo = repository(Settings())
    detail = None
    for candidate in (system,) if system else guess_systems(code):
        try:
            detail = repo.lookup(candidate, code)
            break
        except CodebookError as exc:
            error = exc
    if detail is None:
        raise fail(error.message, 1)
    if as_json:
        out.print_json(json.dumps(dataclasses.asdict(detail), default=str))
        return
    out.print(f"[bold]{detail.code}[/bold]  {detail.description}", highlight=False)
    billable = "billable" if detail.is_billable else "not billable (choose a more specific code)"
    out.print(f"{detail.system} {detail.version} | {billable}", highlight=False)
    if detail.parent:
        out.print(f"parent: {detail.parent}", highlight=False)
    if detail.children:
        out.print(f"children: {', '.join(detail.children[:30])}{' ...' if len(detail.children) > 30 else ''}",
                  highlight=False)
    for source, text in detail.terms:
        out.print(f"  term ({source}): {text}", highlight=False)
    for kind, notes in detail.instructions.items():
        for text in notes:
            out.print(f"  {kind}: {text}", highlight=False)


@codebook_app.command("search")
def codebook_search(
    text: str,
    system: Annotated[str, typer.Option(help="icd10cm, cpt or hcpcs")] = "icd10cm",
    limit: Annotated[int, typer.Option(min=1, max=200)] = 10,
    billable_only: Annotated[bool, typer.Option("--billable")] = False,
) -> None:
    """Find codes whose description or terms contain every word of TEXT."""
    repo = repository(Settings())
    try:
        hits = repo.search(system, text, limit=limit, billable_only=billable_only)
    except CodebookError as exc:
        raise fail(exc.message, 1) from exc
    table = Table("code", "description", "billable", "matched")
    for h in hits:
        table.add_row(h.code, h.description, "yes" if h.is_billable else "no",
                      "" if h.matched == h.description else h.matched)
    out.print(table)


def _import(kind: str, path: Path, **kwargs: object) -> None:
    from codebooks.loaders.cpt import import_licensed_cpt
    from codebooks.loaders.hcpcs import import_hcpcs
    from codebooks.loaders.icd10cm_index import import_index
    from codebooks.loaders.mce import import_mce

    importer = {"cpt": import_licensed_cpt, "hcpcs": import_hcpcs, "mce": import_mce, "index": import_index}[kind]
    sessions = open_codebooks(Settings())
    try:
        with progress_bars() as factory, sessions.begin() as s:
            report = importer(s, path, progress=factory(f"{kind} {path.name}"), **kwargs)  # type: ignore[operator]
    except CodebookError as exc:
        raise fail(exc.message) from exc
    if report.skipped:
        out.print(f"{report.system} {report.version}: already imported (use --force to replace)")
    else:
        counts = report.codes or report.terms or report.edits
        out.print(f"{report.system} {report.version}: imported {counts} rows ({report.seconds:.1f} s)")


ForceOpt = Annotated[bool, typer.Option(help="Replace an earlier import of the same version")]


@codebook_app.command("import-cpt")
def import_cpt(
    file: Path,
    version: Annotated[str | None, typer.Option(help="Version label, e.g. 2026")] = None,
    effective_from: Annotated[str | None, typer.Option(help="YYYY-MM-DD (default: Jan 1 this year)")] = None,
    force: ForceOpt = False,
) -> None:
    """Import a licensed CPT file (CSV/TSV: code and descriptor columns); its wording replaces the curated one."""
    start = _parse_date(effective_from) if effective_from else None
    _import("cpt", file, version=version, effective_from=start, force=force)


@codebook_app.command("import-hcpcs")
def import_hcpcs_cmd(
    file: Path, version: Annotated[str | None, typer.Option()] = None, force: ForceOpt = False
) -> None:
    """Import a CMS HCPCS Level II alpha-numeric file (fixed-width ANWEB)."""
    _import("hcpcs", file, version=version, force=force)


@codebook_app.command("import-mce")
def import_mce_cmd(file: Path, force: ForceOpt = False) -> None:
    """Import a Medicare Code Editor list-edits file (tab-separated)."""
    _import("mce", file, force=force)


@codebook_app.command("import-index")
def import_index_cmd(file: Path, force: ForceOpt = False) -> None:
    """Import the ICD-10-CM Alphabetic Index (flattened CSV) as index terms of the current version."""
    _import("index", file, force=force)


def _parse_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise fail(f"{value!r} is not a date; use YYYY-MM-DD") from exc


def _register_command_groups() -> None:
    from app.commands import coding, service

    coding.register(app)
    service.register(app)


_register_command_groups()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
