"""Models and migrations never drift: ``alembic check`` against a freshly migrated Postgres,
and the migrations run on SQLite (the embedded default); every migration goes down and up
again."""

from __future__ import annotations

import uuid
from pathlib import Path

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, text

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


def _revision(settings: Settings) -> str | None:
    engine = create_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _round_trip(settings: Settings) -> None:
    """Upgrade to head, downgrade one revision at a time to base, upgrade again, and check
    the result against the models."""
    config = alembic_config(settings)
    script = ScriptDirectory.from_config(config)
    upgrade(settings)
    head = script.get_current_head()
    assert _revision(settings) == head
    passed = []
    while (current := _revision(settings)) is not None:
        passed.append(current)
        command.downgrade(config, "-1")
    # Every revision was passed, newest first: each downgrade went one step.
    assert passed == [s.revision for s in script.walk_revisions()]
    assert not set(_tables(settings)) - {"alembic_version"}  # base is empty
    upgrade(settings)
    assert _revision(settings) == head
    command.check(config)  # raises if the models and the re-created schema differ


def _tables(settings: Settings) -> list[str]:
    engine = create_engine(settings.sqlalchemy_url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_round_trip_on_postgres() -> None:
    name = f"herald_test_alembic_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(" ".join(statement.split()))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        settings = Settings(database_url=url, secret_key=SECRET_KEY)
        _round_trip(settings)
        # deliveries' indexes are built without blocking writes, on both ways up.
        for index in ("ix_deliveries_app_id_unfinished", "ix_deliveries_final_at"):
            builds = [s for s in statements if s.startswith("CREATE INDEX") and index in s]
            assert len(builds) == 2, builds
            assert all(s.startswith("CREATE INDEX CONCURRENTLY") for s in builds), builds
        engine = create_engine(url)
        with engine.connect() as conn:
            invalid = conn.execute(text(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
            )).scalars().all()
        engine.dispose()
        assert invalid == []
    finally:
        event.remove(Engine, "before_cursor_execute", record)
        drop_database(name)


def test_downgrade_and_upgrade_round_trip_on_sqlite(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    _round_trip(settings)
    engine = create_engine(settings.sqlalchemy_url)
    with engine.connect() as conn:
        sql = conn.execute(text(
            "SELECT sql FROM sqlite_master WHERE name = 'ix_deliveries_app_id_unfinished'"
        )).scalar_one()
    engine.dispose()
    assert sql.endswith("WHERE NOT final")  # SQLite keeps its partial index


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
