"""offline crew: client-generated change ids

Revision ID: 3f6a1c2b7d04
Revises: 3f6a1c2b7d03
Create Date: 2026-11-27 14:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

import portal.timeutil


# revision identifiers, used by Alembic.
revision = '3f6a1c2b7d04'
down_revision = '3f6a1c2b7d03'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
