"""Applications (Pinpoint "projects"): create, read, list, delete."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from worker import wire
from worker.core.db import utcnow
from worker.core.errors import BadRequest, NotFound
from worker.core.models import Application, Channel, Endpoint, SendRequest

ARN_PREFIX = "arn:aws:mobiletargeting:{region}:000000000000:apps/"
MAX_PAGE_SIZE = 1000


def iso(moment: datetime | None) -> str | None:
    """Pinpoint's timestamp form: 2019-01-07T18:04:13.285Z."""
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def application_response(app: Application, region: str) -> wire.ApplicationResponse:
    return wire.ApplicationResponse(
        arn=ARN_PREFIX.format(region=region) + app.id,
        id=app.id,
        name=app.name,
        tags=dict(app.tags or {}),
        creation_date=iso(app.created_at),
    )


def create_application(session: Session, request: wire.CreateApplicationRequest) -> Application:
    app = Application(
        id=uuid.uuid4().hex, name=request.name, tags=request.tags or {}, created_at=utcnow()
    )
    session.add(app)
    session.flush()
    return app


def get_application(session: Session, app_id: str) -> Application:
    app = session.get(Application, app_id)
    if app is None:
        raise NotFound("Resource not found")
    return app


def list_applications(
    session: Session, page_size: str | None, token: str | None,
    app_ids: frozenset[str] | None = None,
) -> tuple[list[Application], str | None]:
    """One page of applications ordered by id; the token is the last id seen, opaque.

    ``app_ids`` limits the listing to the apps a scoped key may use, in the query itself, so
    that neither a page nor its token names another app."""
    size = 100
    if page_size is not None:
        # isascii: "²".isdigit() is true and int("²") fails; int() also refuses > 4300 digits.
        if not (page_size.isascii() and page_size.isdigit() and len(page_size) <= 6) or not (
            1 <= int(page_size) <= MAX_PAGE_SIZE
        ):
            raise BadRequest(f"page-size must be an integer from 1 to {MAX_PAGE_SIZE}")
        size = int(page_size)
    query = select(Application).order_by(Application.id).limit(size + 1)
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("token is not a valid pagination token") from None
        if "\x00" in after:
            raise BadRequest("token is not a valid pagination token")
        query = query.where(Application.id > after)
    if app_ids is not None:
        query = query.where(Application.id.in_(app_ids))
    apps = list(session.scalars(query))
    next_token = None
    if len(apps) > size:
        apps = apps[:size]
        next_token = base64.urlsafe_b64encode(apps[-1].id.encode()).decode()
    return apps, next_token


def delete_application(session: Session, app_id: str) -> Application:
    """Delete the application with its endpoints, channels and message history."""
    app = get_application(session, app_id)
    # Explicit deletes rather than relying on ON DELETE CASCADE, which SQLite may not enforce
    # on databases created before foreign keys were switched on.
    for model in (Endpoint, Channel, SendRequest):
        session.execute(delete(model).where(model.app_id == app_id))
    session.delete(app)
    session.flush()
    return app
