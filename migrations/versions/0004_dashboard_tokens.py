"""dashboard tokens: one-time login links and revocable sessions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:20:00.000000
"""

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dashboard_tokens',
        sa.Column('nonce', sa.String(length=64), nullable=False),
        sa.Column('purpose', sa.String(length=16), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('nonce', name=op.f('pk_dashboard_tokens')),
    )
    op.create_index(op.f('ix_dashboard_tokens_expires_at'), 'dashboard_tokens', ['expires_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_dashboard_tokens_expires_at'), table_name='dashboard_tokens')
    op.drop_table('dashboard_tokens')
