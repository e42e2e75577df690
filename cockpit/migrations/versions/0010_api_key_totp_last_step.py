"""api_keys.totp_last_step: a TOTP code is good once

A step-up code was accepted for as long as it was valid (about 90 s with the clock
drift allowed), for any number of TERMINATEs and approvals: one read over an
operator's shoulder, or from a proxy's log, could be played again. Each key now
records the time step of the last code it used, and a code of that step or earlier
is refused.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('totp_last_step')
