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
    op.create_index('ix_deliveries_app_id_unfinished', 'deliveries', ['app_id'], unique=False, postgresql_where=sa.text('NOT final'), sqlite_where=sa.text('NOT final'))


def downgrade() -> None:
    op.drop_index('ix_deliveries_app_id_unfinished', table_name='deliveries', postgresql_where=sa.text('NOT final'), sqlite_where=sa.text('NOT final'))
