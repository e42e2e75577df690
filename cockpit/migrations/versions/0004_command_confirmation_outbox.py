"""c2l_commands.confirmed_at: the confirmation outbox

A final command whose confirmation was never published (a broker outage, or the
replica died between finishing it and publishing) has ``confirmed_at`` NULL; the
recovery loop publishes it. Commands already final are taken as confirmed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('c2l_commands', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE c2l_commands SET confirmed_at = finished_at WHERE finished_at IS NOT NULL")
    with op.batch_alter_table('c2l_commands', schema=None) as batch_op:
        batch_op.create_index('ix_c2l_commands_unconfirmed', ['finished_at'], unique=False,
                              sqlite_where=sa.text('confirmed_at IS NULL AND finished_at IS NOT NULL'),
                              postgresql_where=sa.text('confirmed_at IS NULL AND finished_at IS NOT NULL'))


def downgrade() -> None:
    with op.batch_alter_table('c2l_commands', schema=None) as batch_op:
        batch_op.drop_index('ix_c2l_commands_unconfirmed',
                            sqlite_where=sa.text('confirmed_at IS NULL AND finished_at IS NOT NULL'),
                            postgresql_where=sa.text('confirmed_at IS NULL AND finished_at IS NOT NULL'))
        batch_op.drop_column('confirmed_at')
