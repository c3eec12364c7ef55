"""board and dashboard speed: each job's stored lines total, status indexes in board order, and each
billing record's copy of its job's completion time; when a record's dispute was decided

Revision ID: 3f6a1c2b7d06
Revises: 3f6a1c2b7d05
Create Date: 2026-11-27 17:40:00.000000

"""
from alembic import op
import sqlalchemy as sa

import portal.timeutil


# revision identifiers, used by Alembic.
revision = '3f6a1c2b7d06'
down_revision = '3f6a1c2b7d05'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lines_total', sa.Integer(), server_default='0', nullable=False))
        batch_op.drop_index('ix_jobs_work_status')
        batch_op.drop_index('ix_jobs_billing_status')
        batch_op.create_index('ix_jobs_work_status_place', ['work_status', 'scheduled_start', 'id'], unique=False)
        batch_op.create_index('ix_jobs_billing_status_place', ['billing_status', 'scheduled_start', 'id'], unique=False)
    op.execute('UPDATE jobs SET lines_total = COALESCE('
               '(SELECT SUM(amount + tax_amount) FROM job_line_items WHERE job_line_items.job_id = jobs.id), 0)')
    with op.batch_alter_table('billing_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('work_completed_at', portal.timeutil.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('dispute_closed_at', portal.timeutil.UTCDateTime(timezone=True), nullable=True))
    op.execute('UPDATE billing_records SET work_completed_at = '
               '(SELECT completed_at FROM jobs WHERE jobs.id = billing_records.job_id)')


def downgrade():
    with op.batch_alter_table('billing_records', schema=None) as batch_op:
        batch_op.drop_column('dispute_closed_at')
        batch_op.drop_column('work_completed_at')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_billing_status_place')
        batch_op.drop_index('ix_jobs_work_status_place')
        batch_op.create_index('ix_jobs_billing_status', ['billing_status'], unique=False)
        batch_op.create_index('ix_jobs_work_status', ['work_status'], unique=False)
        batch_op.drop_column('lines_total')
