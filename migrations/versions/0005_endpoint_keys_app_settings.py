"""case-insensitive endpoint ids; application settings

Endpoints gain ``id_key``, the folded id, unique per app. Existing endpoints whose ids differ
only in case become one: the most recently updated is kept (it holds what the client wrote
last) and the others are deleted, each named in the log. Applications gain ``settings`` and
``settings_updated_at`` (UpdateApplicationSettings).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:40:00.000000
"""

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def _fill_keys() -> None:
    """id_key = id.lower() in Python, as worker.core.models.endpoint_key computes it (SQL
    lower() differs by database and locale)."""
    bind = op.get_bind()
    endpoints = sa.table(
        'endpoints', sa.column('app_id', sa.String), sa.column('id', sa.String),
        sa.column('id_key', sa.Text), sa.column('updated_at', sa.DateTime(timezone=True)),
    )
    rows = bind.execute(
        sa.select(endpoints.c.app_id, endpoints.c.id).order_by(
            endpoints.c.app_id, endpoints.c.updated_at.desc(), endpoints.c.id)
    ).all()
    seen: set[tuple[str, str]] = set()
    for app_id, endpoint_id in rows:
        key = endpoint_id.lower()
        where = sa.and_(endpoints.c.app_id == app_id, endpoints.c.id == endpoint_id)
        if (app_id, key) in seen:
            log.warning("deleting endpoint %r of app %s: its id differs only in case from a "
                        "more recently updated endpoint, and endpoint ids are "
                        "case-insensitive", endpoint_id, app_id)
            bind.execute(sa.delete(endpoints).where(where))
            continue
        seen.add((app_id, key))
        bind.execute(sa.update(endpoints).where(where).values(id_key=key))


def upgrade() -> None:
    with op.batch_alter_table('applications') as batch:
        batch.add_column(sa.Column('settings', sa.JSON().with_variant(
            postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
            nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column('settings_updated_at', sa.DateTime(timezone=True),
                                   nullable=True))
    op.add_column('endpoints', sa.Column('id_key', sa.Text(), nullable=True))
    _fill_keys()
    with op.batch_alter_table('endpoints') as batch:
        batch.alter_column('id_key', existing_type=sa.Text(), nullable=False)
        batch.create_unique_constraint(
            op.f('uq_endpoints_app_id_id_key'), ['app_id', 'id_key'])


def downgrade() -> None:
    with op.batch_alter_table('endpoints') as batch:
        batch.drop_constraint(op.f('uq_endpoints_app_id_id_key'), type_='unique')
        batch.drop_column('id_key')
    with op.batch_alter_table('applications') as batch:
        batch.drop_column('settings_updated_at')
        batch.drop_column('settings')
