"""telemetry: drop the indexes no query uses

``ix_telemetry_fleet_id`` is covered by ``ix_telemetry_fleet_ts`` (same leading
column) and nothing looks telemetry up by ``source_agent_id``; together they were a
third of the cost of a 1,000-message insert on SQLite.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_telemetry_source_agent_id'))
        batch_op.drop_index(batch_op.f('ix_telemetry_fleet_id'))


def downgrade() -> None:
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_telemetry_fleet_id'), ['fleet_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_telemetry_source_agent_id'), ['source_agent_id'], unique=False)
