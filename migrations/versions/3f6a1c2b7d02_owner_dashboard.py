"""owner dashboard: audit trigger and reporting indexes

Revision ID: 3f6a1c2b7d02
Revises: 3f6a1c2b7d01
Create Date: 2026-11-27 14:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

import portal.timeutil


# revision identifiers, used by Alembic.
revision = '3f6a1c2b7d02'
down_revision = '3f6a1c2b7d01'
branch_labels = None
depends_on = None

MILESTONES = ('sent_at', 'paid_at', 'refunded_at', 'disputed_at')
# Backfill: the first audit entry that moved the record into one of these statuses.
BACKFILL = {
    'sent_at': ('sent', 'processing', 'payment_failed', 'overdue', 'paid', 'partially_refunded', 'refunded',
                'disputed'),
    'paid_at': ('paid', 'partially_refunded', 'refunded', 'disputed'),
    'refunded_at': ('partially_refunded', 'refunded'),
    'disputed_at': ('disputed',),
}

APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_entries_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_entries is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""
APPEND_ONLY_TRIGGER = """
CREATE TRIGGER audit_entries_append_only
BEFORE UPDATE OR DELETE ON audit_entries
FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()
"""


def upgrade():
    with op.batch_alter_table('billing_records', schema=None) as batch_op:
        for column in MILESTONES:
            batch_op.add_column(sa.Column(column, portal.timeutil.UTCDateTime(timezone=True), nullable=True))
            batch_op.create_index(batch_op.f(f'ix_billing_records_{column}'), [column], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_records_due_at'), ['due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_records_status'), ['status'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_completed_at'), ['completed_at'], unique=False)

    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entries_source_actor_ref', ['source', 'actor_ref'], unique=False)

    for column, statuses in BACKFILL.items():
        listed = ", ".join(f"'{status}'" for status in statuses)
        op.execute(
            f"UPDATE billing_records SET {column} = (SELECT min(a.created_at) FROM audit_entries a "
            f"WHERE a.entity_type = 'billing_record' AND a.entity_id = billing_records.id "
            f"AND a.field = 'status' AND a.new_value IN ({listed})) WHERE {column} IS NULL")

    if op.get_bind().dialect.name == 'postgresql':
        # Row-level: TRUNCATE (the test suite's cleanup, a deliberate admin act) is not refused.
        op.execute(APPEND_ONLY_FUNCTION)
        op.execute(APPEND_ONLY_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS audit_entries_append_only ON audit_entries")
        op.execute("DROP FUNCTION IF EXISTS audit_entries_append_only()")

    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entries_source_actor_ref')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_completed_at'))

    with op.batch_alter_table('billing_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_records_status'))
        batch_op.drop_index(batch_op.f('ix_billing_records_due_at'))
        for column in reversed(MILESTONES):
            batch_op.drop_index(batch_op.f(f'ix_billing_records_{column}'))
            batch_op.drop_column(column)
