"""``uvicorn api.main:app`` — the production API process (``herald api``)."""

from api.app import create_app
from worker.core.config import get_settings
from worker.core.logs import configure_logging

configure_logging(get_settings().log_level)
app = create_app()
