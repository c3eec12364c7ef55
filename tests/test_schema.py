"""The migrations are the schema: no drift on PostgreSQL, and the SQLite default works too."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from portal.audit.services import Actor
from portal.billing.models import BillingStatus, BillingTrigger
from portal.extensions import db as _db
from portal.jobs.models import WorkStatus
from portal.jobs.services import complete_job


def drift(connection):
    return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), _db.metadata)


def test_postgres_schema_matches_the_models(app, db):
    with db.engine.connect() as connection:
        assert drift(connection) == []


def test_sqlite_default_migrates_and_completes_a_job(embedded_sqlite):
    with _db.engine.connect() as connection:
        assert drift(connection) == []
    from tests import factories

    crew = factories.user("crew")
    job = factories.job(crew=[crew], items=[("Labor", "2.5", 8500)])
    complete_job(job, by=Actor.for_user(crew))
    _db.session.commit()
    assert job.work_status == WorkStatus.COMPLETED
    assert job.billing_status == BillingStatus.PENDING
    assert job.lines_total == 21250
    assert _db.session.query(BillingTrigger).count() == 1
