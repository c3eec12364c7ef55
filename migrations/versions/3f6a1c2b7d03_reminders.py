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
    # Existing clients get the default policy: 3 days before due, on the day, 7 and 14 days after.
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminder_offsets', sa.JSON(), server_default=sa.text("'[-3, 0, 7, 14]'"), nullable=False))
        batch_op.add_column(sa.Column('reminder_limit', sa.Integer(), server_default=sa.text('4'), nullable=False))
        batch_op.add_column(sa.Column('reminders_paused', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('customer_emails', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminder_step', sa.Integer(), nullable=True))
        batch_op.create_index('uq_customer_emails_one_reminder_per_step', ['record_id', 'reminder_step'], unique=True, postgresql_where=sa.text('reminder_step IS NOT NULL'), sqlite_where=sa.text('reminder_step IS NOT NULL'))


def downgrade():
    with op.batch_alter_table('customer_emails', schema=None) as batch_op:
        batch_op.drop_index('uq_customer_emails_one_reminder_per_step', postgresql_where=sa.text('reminder_step IS NOT NULL'), sqlite_where=sa.text('reminder_step IS NOT NULL'))
        batch_op.drop_column('reminder_step')

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('reminders_paused')
        batch_op.drop_column('reminder_limit')
        batch_op.drop_column('reminder_offsets')
