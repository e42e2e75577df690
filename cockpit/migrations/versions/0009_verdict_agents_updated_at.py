"""verdict_agents.updated_at: an agent's verdicts newest first from one index

``GET /verdicts?agent_id=`` found the agent's verdicts through verdict_agents but
ordered them by the verdicts' ``updated_at``: PostgreSQL walked every verdict by
time and probed verdict_agents for each (150-170 ms a page at 500,000 verdicts).
verdict_agents now carries its verdict's ``updated_at`` (filled here from the
verdicts, then written by the verdict engine in the transactions that change a
verdict's) and an index on ``(agent_id, updated_at DESC, verdict_id)`` that holds an
agent's page in order.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('verdict_agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
    op.execute('UPDATE verdict_agents SET updated_at = '
               '(SELECT verdicts.updated_at FROM verdicts WHERE verdicts.id = verdict_agents.verdict_id)')
    with op.batch_alter_table('verdict_agents', schema=None) as batch_op:
        batch_op.alter_column('updated_at', existing_type=sa.DateTime(timezone=True), nullable=False)
    # After the batch: SQLite rebuilds the table for NOT NULL, and an expression index
    # cannot be carried through the rebuild.
    op.create_index('ix_verdict_agents_agent_id_updated_at', 'verdict_agents',
                    ['agent_id', sa.literal_column('updated_at DESC'), 'verdict_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_verdict_agents_agent_id_updated_at', table_name='verdict_agents')
    with op.batch_alter_table('verdict_agents', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
