from __future__ import annotations

from alembic import context

from app.models import AppBase

# Its own version table: the code-set schema (codebooks/migrations) evolves independently in the same database.
VERSION_TABLE = "alembic_version_app"


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # Autogenerate must not see the code-set tables as "removed".
    return type_ != "table" or name in AppBase.metadata.tables


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=AppBase.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
