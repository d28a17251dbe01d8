"""result retention: totals that outlive pruned rows, and the indexes pruning reads

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:30:00.000000
"""

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

BUCKETS = ('le_0_005', 'le_0_01', 'le_0_025', 'le_0_05', 'le_0_1', 'le_0_25', 'le_0_5',
           'le_1', 'le_2_5', 'le_5', 'le_10', 'le_30')


def upgrade() -> None:
    # The indexes first: on Postgres they are built outside any transaction, so a failed
    # build must not leave this migration's tables behind (a rerun would stop on them).
    _create_indexes()
    op.create_table('delivery_totals',
    sa.Column('channel_type', sa.String(length=24), nullable=False),
    sa.Column('delivery_status', sa.String(length=24), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('channel_type', 'delivery_status', name=op.f('pk_delivery_totals'))
    )
    op.create_table('attempt_totals',
    sa.Column('channel_type', sa.String(length=24), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('delivery_status', sa.String(length=24), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('retries', sa.BigInteger(), nullable=False),
    sa.Column('duration_ms', sa.Double(), nullable=False),
    *[sa.Column(name, sa.BigInteger(), nullable=False) for name in BUCKETS],
    sa.PrimaryKeyConstraint('channel_type', 'provider', 'delivery_status', name=op.f('pk_attempt_totals'))
    )
    op.create_table('rollup_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('attempts_rolled_upto', sa.BigInteger(), nullable=False),
    sa.Column('attempts_seen_upto', sa.BigInteger(), nullable=False),
    sa.Column('attempts_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollup_state'))
    )
    # Nothing rolled up yet; the first maintenance pass records what it sees.
    op.execute("INSERT INTO rollup_state (id, attempts_rolled_upto, attempts_seen_upto) "
               "VALUES (1, 0, 0)")


def _create_indexes() -> None:
    indexes = [
        ('ix_deliveries_final_at', 'deliveries', ['final_at'],
         {'postgresql_where': sa.text('final'), 'sqlite_where': sa.text('final')}),
        ('ix_message_requests_created_at', 'message_requests', ['created_at'], {}),
    ]
    if op.get_bind().dialect.name != 'postgresql':
        for name, table, columns, where in indexes:
            op.create_index(name, table, columns, unique=False, **where)
        return
    # deliveries and message_requests are the large tables: build without blocking writes.
    # CONCURRENTLY cannot run inside a transaction, and a failed build leaves an INVALID
    # index behind: drop it first, so `herald migrate` can simply be run again.
    with op.get_context().autocommit_block():
        for name, table, columns, where in indexes:
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
            op.create_index(name, table, columns, unique=False, postgresql_concurrently=True,
                            **where)


def downgrade() -> None:
    op.drop_index('ix_message_requests_created_at', table_name='message_requests')
    op.drop_index('ix_deliveries_final_at', table_name='deliveries', postgresql_where=sa.text('final'), sqlite_where=sa.text('final'))
    op.drop_table('rollup_state')
    op.drop_table('attempt_totals')
    op.drop_table('delivery_totals')
