"""Index the audit by layer.

``GET /audits?layer=`` walked the whole audit for its page and its total (190 ms per
million rows on SQLite, on the event loop's thread; a layer with no rows cost as
much). With ``(layer, id)`` both walk only that layer's rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_logs', schema=None) as batch_op:
        batch_op.create_index('ix_audit_logs_layer_id', ['layer', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_logs_layer_id')
