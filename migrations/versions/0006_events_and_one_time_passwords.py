"""PutEvents' event outbox, one-time passwords, sealed substitutions of a send

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:40:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'app_events',
        sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
        sa.Column('app_id', sa.String(length=32), nullable=False),
        sa.Column('endpoint_id', sa.String(length=128), nullable=False),
        sa.Column('event_id', sa.Text(), nullable=False),
        sa.Column('event_type', sa.String(length=64), nullable=False),
        sa.Column('event_timestamp', sa.DateTime(timezone=True), nullable=False),
        sa.Column('attributes', JSON, nullable=False),
        sa.Column('metrics', JSON, nullable=False),
        sa.Column('session', JSON, nullable=True),
        sa.Column('event', JSON, nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('forwarded_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['app_id'], ['applications.id'],
                                name=op.f('fk_app_events_app_id_applications'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_app_events')),
    )
    op.create_index('ix_app_events_unforwarded', 'app_events', ['app_id', 'id'], unique=False,
                    postgresql_where=sa.text('forwarded_at IS NULL'),
                    sqlite_where=sa.text('forwarded_at IS NULL'))
    op.create_table(
        'one_time_passwords',
        sa.Column('app_id', sa.String(length=32), nullable=False),
        sa.Column('reference_id', sa.String(length=128), nullable=False),
        sa.Column('destination', sa.String(length=32), nullable=False),
        sa.Column('code_hash', sa.LargeBinary(), nullable=False),
        sa.Column('attempts_left', sa.Integer(), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('request_id', sa.String(length=36), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['app_id'], ['applications.id'],
                                name=op.f('fk_one_time_passwords_app_id_applications'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('app_id', 'reference_id', 'destination',
                                name=op.f('pk_one_time_passwords')),
    )
    op.create_index(op.f('ix_one_time_passwords_expires_at'), 'one_time_passwords',
                    ['expires_at'], unique=False)
    with op.batch_alter_table('message_requests') as batch:
        batch.add_column(sa.Column('sealed_substitutions', sa.LargeBinary(), nullable=True))
    op.create_index('ix_message_requests_sealed', 'message_requests', ['id'], unique=False,
                    postgresql_where=sa.text('sealed_substitutions IS NOT NULL'),
                    sqlite_where=sa.text('sealed_substitutions IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_message_requests_sealed', table_name='message_requests',
                  postgresql_where=sa.text('sealed_substitutions IS NOT NULL'),
                  sqlite_where=sa.text('sealed_substitutions IS NOT NULL'))
    with op.batch_alter_table('message_requests') as batch:
        batch.drop_column('sealed_substitutions')
    op.drop_index(op.f('ix_one_time_passwords_expires_at'), table_name='one_time_passwords')
    op.drop_table('one_time_passwords')
    op.drop_index('ix_app_events_unforwarded', table_name='app_events',
                  postgresql_where=sa.text('forwarded_at IS NULL'),
                  sqlite_where=sa.text('forwarded_at IS NULL'))
    op.drop_table('app_events')
