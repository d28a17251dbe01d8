"""Applications (Pinpoint "projects"): create, read, list, delete; their settings and tags."""

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

ACCOUNT = "000000000000"
ARN_PREFIX = "arn:aws:mobiletargeting:{region}:" + ACCOUNT + ":apps/"
MAX_PAGE_SIZE = 1000
# Pinpoint's tag quotas (TagsModel): 50 tags, keys up to 128 characters, values up to 256.
MAX_TAGS = 50
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256


def iso(moment: datetime | None) -> str | None:
    """Pinpoint's timestamp form: 2019-01-07T18:04:13.285Z."""
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def app_arn(app_id: str, region: str) -> str:
    """The app's ARN in the region the request was signed for."""
    return ARN_PREFIX.format(region=region) + app_id


def application_response(app: Application, region: str) -> wire.ApplicationResponse:
    return wire.ApplicationResponse(
        arn=app_arn(app.id, region),
        id=app.id,
        name=app.name,
        tags=dict(app.tags or {}),
        creation_date=iso(app.created_at),
    )


def check_tags(tags: dict[str, str]) -> None:
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY:
            raise BadRequest(f"Tag key '{key[:60]}' must be 1 to {MAX_TAG_KEY} characters")
        if key.lower().startswith("aws:"):
            raise BadRequest(f"Tag key '{key[:60]}' uses the reserved prefix aws:")
        if len(value) > MAX_TAG_VALUE:
            raise BadRequest(f"Tag {key[:60]} has a value longer than {MAX_TAG_VALUE} characters")


def create_application(session: Session, request: wire.CreateApplicationRequest) -> Application:
    tags = dict(request.tags or {})
    check_tags(tags)
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"An application may have at most {MAX_TAGS} tags")
    app = Application(id=uuid.uuid4().hex, name=request.name, tags=tags, settings={},
                      created_at=utcnow())
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


# --- settings ------------------------------------------------------------------------------

# The members of an app's settings that are objects: always answered, {} until set.
_ALWAYS_OBJECTS = ("CampaignHook", "Limits", "QuietTime")


def settings_response(app: Application) -> wire.ApplicationSettingsResource:
    stored = dict(app.settings or {})
    for member in _ALWAYS_OBJECTS:
        stored.setdefault(member, {})
    stored["ApplicationId"] = app.id
    stored["LastModifiedDate"] = iso(app.settings_updated_at or app.created_at)
    return wire.ApplicationSettingsResource.model_validate(stored)


def update_settings(
    session: Session, app_id: str, request: wire.WriteApplicationSettingsRequest
) -> Application:
    """Each member the request sends replaces the stored one; the others are kept."""
    app = get_application(session, app_id)
    app.settings = {**(app.settings or {}), **request.to_wire()}
    app.settings_updated_at = utcnow()
    session.flush()
    return app


# --- tags --------------------------------------------------------------------------------


def app_id_of_arn(arn: str, region: str) -> str:
    """The app an ARN names. Only app ARNs of Herald's account in the request's region name
    anything here; other resource types and malformed ARNs are a 400."""
    parts = arn.split(":", 5)
    if (len(parts) != 6 or parts[:3] != ["arn", "aws", "mobiletargeting"]
            or not parts[5].startswith("apps/") or "/" in parts[5][len("apps/"):]
            or not parts[5][len("apps/"):]):
        raise BadRequest("resource-arn must be an application ARN: "
                         "arn:aws:mobiletargeting:REGION:ACCOUNT:apps/APPLICATION_ID")
    if parts[3] != region or parts[4] != ACCOUNT:
        raise NotFound("Resource not found")
    return parts[5][len("apps/"):]


def tag_application(session: Session, app_id: str, tags: dict[str, str]) -> None:
    app = get_application(session, app_id)
    check_tags(tags)
    merged = {**(app.tags or {}), **tags}
    if len(merged) > MAX_TAGS:
        raise BadRequest(f"An application may have at most {MAX_TAGS} tags; "
                         f"this would give it {len(merged)}")
    app.tags = merged
    session.flush()


def untag_application(session: Session, app_id: str, keys: list[str]) -> None:
    app = get_application(session, app_id)
    app.tags = {k: v for k, v in (app.tags or {}).items() if k not in set(keys)}
    session.flush()
