"""verdict_agents: the agents each verdict names, indexed

``GET /verdicts?agent_id=`` matched the serialised ``agents_involved`` JSON with
LIKE, a scan of every verdict (evidence chains included) that grows with the table.
The new table is filled from the existing verdicts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    table = op.create_table('verdict_agents',
    sa.Column('agent_id', sa.String(length=200), nullable=False),
    sa.Column('verdict_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['verdict_id'], ['verdicts.id'], name=op.f('fk_verdict_agents_verdict_id_verdicts'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id', 'verdict_id', name=op.f('pk_verdict_agents'))
    )
    conn = op.get_bind()
    verdicts = sa.table('verdicts', sa.column('id', sa.String), sa.column('agents_involved', sa.JSON),
                        sa.column('target', sa.String))
    after = ''
    while True:
        rows = conn.execute(
            sa.select(verdicts.c.id, verdicts.c.agents_involved, verdicts.c.target)
            .where(verdicts.c.id > after).order_by(verdicts.c.id).limit(_BATCH)
        ).all()
        if not rows:
            break
        links: list[dict[str, str]] = []
        for row in rows:
            agents = row.agents_involved
            if isinstance(agents, str):
                agents = json.loads(agents)
            named = {a for a in agents or [] if isinstance(a, str)} | ({row.target} if row.target else set())
            links.extend({'agent_id': a, 'verdict_id': row.id} for a in sorted(named))
        if links:
            conn.execute(sa.insert(table), links)
        after = rows[-1].id


def downgrade() -> None:
    op.drop_table('verdict_agents')
