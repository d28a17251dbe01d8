"""Models and migrations never drift: ``alembic check`` against a freshly migrated Postgres,
and the migrations run on SQLite (the embedded default)."""

from __future__ import annotations

import uuid
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect

from tests.stack import SECRET_KEY, create_database, drop_database
from worker.core.config import Settings
from worker.core.migrate import alembic_config, upgrade


def test_alembic_check_is_clean_on_postgres() -> None:
    name = f"herald_test_alembic_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    try:
        settings = Settings(database_url=url, secret_key=SECRET_KEY)
        upgrade(settings)
        command.check(alembic_config(settings))  # raises if autogenerate finds a difference
    finally:
        drop_database(name)


def test_migrations_run_on_sqlite(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    upgrade(settings)
    tables = set(inspect(create_engine(settings.sqlalchemy_url)).get_table_names())
    assert {"applications", "endpoints", "channels", "message_requests", "deliveries",
            "delivery_attempts", "access_keys"} <= tables
    command.check(alembic_config(settings))
