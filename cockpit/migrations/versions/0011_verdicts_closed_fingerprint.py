"""verdicts: when a situation's verdict was last closed

A draft already on its way when an operator dismissed (or mitigated) its situation's
verdict, or one redelivered after an outage, opened a new ACTIVE verdict with the
evidence the operator had just closed. The verdict engine now looks up when each new
situation's verdict was last closed and drops drafts observed before that; this
partial index (closed verdicts only, so updating an ACTIVE one never touches it)
serves that lookup.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_verdicts_closed_fingerprint', 'verdicts', ['fingerprint', 'updated_at'], unique=False,
                    sqlite_where=sa.text("status <> 'ACTIVE'"), postgresql_where=sa.text("status <> 'ACTIVE'"))


def downgrade() -> None:
    op.drop_index('ix_verdicts_closed_fingerprint', table_name='verdicts',
                  sqlite_where=sa.text("status <> 'ACTIVE'"), postgresql_where=sa.text("status <> 'ACTIVE'"))
