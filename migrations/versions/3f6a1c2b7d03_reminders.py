"""reminders: dunning policy and sent reminders

Revision ID: 3f6a1c2b7d03
Revises: 3f6a1c2b7d02
Create Date: 2026-11-27 14:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

import portal.timeutil


# revision identifiers, used by Alembic.
revision = '3f6a1c2b7d03'
down_revision = '3f6a1c2b7d02'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
