"""Running the Alembic migrations (``herald migrate``) from code."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from worker.core.config import Settings
from worker.core.db import prepare_embedded_database


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return config


def upgrade(settings: Settings) -> None:
    prepare_embedded_database(settings)
    command.upgrade(alembic_config(settings), "head")
