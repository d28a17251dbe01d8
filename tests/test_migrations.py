"""Models and migrations never drift: ``alembic check`` against a freshly migrated Postgres,
and the migrations run on SQLite (the embedded default)."""

from __future__ import annotations

import uuid
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect, text

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


def test_0005_folds_endpoint_ids_keeping_the_latest_of_a_case_collision() -> None:
    """Endpoints written before ids were case-insensitive: each gets its folded key, and of
    two whose ids differ only in case the more recently updated one stays."""
    name = f"herald_test_alembic_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    try:
        settings = Settings(database_url=url, secret_key=SECRET_KEY)
        config = alembic_config(settings)
        command.upgrade(config, "0004")
        engine = create_engine(settings.sqlalchemy_url)
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO applications (id, name, tags, created_at) "
                "VALUES ('a1', 'app', '{}', now())"))
            for endpoint_id, age in (("Ep-1", "2 hours"), ("ep-1", "1 hour"), ("Other", "0")):
                connection.execute(text(
                    "INSERT INTO endpoints (app_id, id, status, opt_out, document, created_at,"
                    " updated_at) VALUES ('a1', :id, 'ACTIVE', 'NONE', '{}', now(),"
                    " now() - CAST(:age AS interval))"), {"id": endpoint_id, "age": age})
        command.upgrade(config, "head")
        with engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT id, id_key FROM endpoints ORDER BY id")).all()
            settings_row = connection.execute(text(
                "SELECT settings FROM applications")).scalar_one()
        engine.dispose()
        assert [tuple(r) for r in rows] == [("Other", "other"), ("ep-1", "ep-1")]
        assert settings_row == {}
    finally:
        drop_database(name)
