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
    op.create_table('crew_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('photo', 'note', 'item', 'complete', name='changekind', native_enum=False, length=16), nullable=False),
    sa.Column('result_id', sa.Integer(), nullable=True),
    sa.Column('created_at', portal.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_crew_changes_job_id_jobs')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_crew_changes_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crew_changes')),
    sa.UniqueConstraint('client_id', name=op.f('uq_crew_changes_client_id'))
    )
    with op.batch_alter_table('crew_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crew_changes_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_crew_changes_user_id'), ['user_id'], unique=False)


def downgrade():
    with op.batch_alter_table('crew_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_crew_changes_user_id'))
        batch_op.drop_index(batch_op.f('ix_crew_changes_job_id'))

    op.drop_table('crew_changes')
