"""index of unfinished deliveries by app (the per-app in-flight cap)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 12:00:00.000000
"""

from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    name, where = 'ix_deliveries_app_id_unfinished', sa.text('NOT final')
    if op.get_bind().dialect.name != 'postgresql':
        op.create_index(name, 'deliveries', ['app_id'], unique=False, sqlite_where=where)
        return
    # As in 0003: deliveries is the large table, so the index is built without blocking
    # writes. CONCURRENTLY cannot run inside a transaction, and a failed build leaves an
    # INVALID index behind: drop it first, so `herald migrate` can simply be run again.
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name='deliveries', postgresql_concurrently=True,
                      if_exists=True)
        op.create_index(name, 'deliveries', ['app_id'], unique=False,
                        postgresql_concurrently=True, postgresql_where=where)


def downgrade() -> None:
    op.drop_index('ix_deliveries_app_id_unfinished', table_name='deliveries', postgresql_where=sa.text('NOT final'), sqlite_where=sa.text('NOT final'))
