"""telemetry: keep quarantined rows out of ix_telemetry_unanalysed

A MUTED agent's telemetry is stored quarantined and never analysed, so its rows kept
``analysed_at`` NULL for ever and the partial index of rows waiting for analysis grew
with every one of them: the backlog count (every half second) and the redispatch scan
walked them all.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

def _replace(sqlite_where: str, postgresql_where: str) -> None:
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.drop_index('ix_telemetry_unanalysed')
        batch_op.create_index('ix_telemetry_unanalysed', ['received_at'], unique=False,
                              sqlite_where=sa.text(sqlite_where), postgresql_where=sa.text(postgresql_where))


def upgrade() -> None:
    # As SQLAlchemy renders ``NOT quarantined`` on each dialect, so the planner matches it.
    _replace('analysed_at IS NULL AND quarantined = 0', 'analysed_at IS NULL AND NOT quarantined')


def downgrade() -> None:
    _replace('analysed_at IS NULL', 'analysed_at IS NULL')
