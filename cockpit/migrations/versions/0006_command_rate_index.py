"""c2l_commands: one index for the rate limit (operator, command_type, created_at)

The per-operator rate limit counts an operator's commands of one type since the
start of its window. With only single-column indexes the planner walked every
command the operator had ever sent (``ix_c2l_commands_operator``), so each
submission cost more than the last. The composite index replaces the operator one
(its leading column serves the operator filter of ``GET /commands`` too).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('c2l_commands', schema=None) as batch_op:
        batch_op.create_index('ix_c2l_commands_rate', ['operator', 'command_type', 'created_at'], unique=False)
        batch_op.drop_index(batch_op.f('ix_c2l_commands_operator'))


def downgrade() -> None:
    with op.batch_alter_table('c2l_commands', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_c2l_commands_operator'), ['operator'], unique=False)
        batch_op.drop_index('ix_c2l_commands_rate')
