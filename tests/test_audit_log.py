"""The audit log: append only (a PostgreSQL trigger refuses UPDATE and DELETE), and its owner's view (issue 7)."""
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from portal.audit.models import AuditEntry, AuditLogIsAppendOnly
from portal.audit.services import Actor, record
from portal.extensions import db as _db
from tests import factories


def action_of(entry_id):
    return _db.session.scalar(text("SELECT action FROM audit_entries WHERE id = :id"), {"id": entry_id})


def test_the_trigger_refuses_update_and_delete(db):
    job = factories.job()  # writes job.created
    entry_id = _db.session.scalar(text("SELECT max(id) FROM audit_entries"))
    for statement in ("UPDATE audit_entries SET action = 'forged' WHERE id = :id",
                      "DELETE FROM audit_entries WHERE id = :id"):
        with pytest.raises(DBAPIError, match="append-only"):
            _db.session.execute(text(statement), {"id": entry_id})
        _db.session.rollback()
    assert action_of(entry_id) == "job.created"
    record(Actor.system("tests"), "still.inserting", job, job=job)  # inserts still work
    _db.session.commit()
    assert _db.session.scalar(text("SELECT count(*) FROM audit_entries WHERE action = 'still.inserting'")) == 1


@pytest.mark.parametrize("change", ["edit", "delete"])
def test_the_orm_refuses_to_edit_or_delete_an_entry(db, change):
    factories.job()
    entry = _db.session.scalars(_db.select(AuditEntry)).first()
    if change == "edit":
        entry.action = "forged"
    else:
        _db.session.delete(entry)
    with pytest.raises(AuditLogIsAppendOnly):
        _db.session.commit()
    _db.session.rollback()
    assert action_of(entry.id) == "job.created"


def test_truncate_still_empties_the_table_for_test_cleanup(db):
    factories.job()
    _db.session.execute(text("TRUNCATE audit_entries"))
    _db.session.commit()
    assert _db.session.scalar(text("SELECT count(*) FROM audit_entries")) == 0


def test_the_app_has_no_route_that_changes_the_audit_log(app):
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("dashboard.")]
    assert rules and all(rule.methods <= {"GET", "HEAD", "OPTIONS"} for rule in rules)


@pytest.fixture
def trail(db, office, crew):
    first = factories.job(crew=[crew])
    second = factories.job()
    record(Actor.for_user(office), "job.noted", first, job=first, field="scope", old="a", new="b")
    record(Actor.for_user(crew), "job.crewed", first, job=first)
    _db.session.commit()
    return first, second


def listed_actions(html):
    import re

    return re.findall(r"<strong>([a-z0-9_.]+)</strong> ·", html)


def test_filter_by_job_user_source_and_date(trail, login, owner, office):
    first, second = trail
    browser = login(owner)
    by_job = browser.get(f"/office/dashboard/audit?job={second.number}").get_data(as_text=True)
    assert listed_actions(by_job) == ["job.created"]
    by_user = browser.get(f"/office/dashboard/audit?user={office.id}").get_data(as_text=True)
    assert listed_actions(by_user) == ["job.noted"]
    assert "scope: a → b" in by_user
    by_source = browser.get("/office/dashboard/audit?source=system").get_data(as_text=True)
    assert listed_actions(by_source) == ["job.created", "job.created"]
    assert listed_actions(browser.get("/office/dashboard/audit?start=2001-01-01&end=2001-01-02")
                          .get_data(as_text=True)) == []
    newest_first = browser.get(f"/office/dashboard/audit?job={first.number}").get_data(as_text=True)
    assert listed_actions(newest_first) == ["job.crewed", "job.noted", "job.created"]


def test_the_log_is_paged(db, login, owner):
    job = factories.job()
    for n in range(60):
        record(Actor.system("tests"), f"step.n{n}", job, job=job)
    _db.session.commit()
    browser = login(owner)
    first = browser.get("/office/dashboard/audit").get_data(as_text=True)
    assert "Page 1 of 2" in first and len(listed_actions(first)) == 50
    second = browser.get("/office/dashboard/audit?page=2").get_data(as_text=True)
    assert len(listed_actions(second)) == 11  # ten steps and job.created


def test_htmx_filtering_swaps_only_the_results(trail, login, owner):
    response = login(owner).get("/office/dashboard/audit?source=user", headers={"HX-Request": "true",
                                                                                 "HX-Target": "audit-results"})
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="audit-results"')
    assert "<html" not in html


@pytest.mark.parametrize("role", ["office", "crew", "partner"])
def test_only_the_owner_reads_the_audit_log(app, login, office, crew, partner, role):
    users = {"office": office, "crew": crew, "partner": partner}
    assert login(users[role]).get("/office/dashboard/audit").status_code == 404
    assert app.test_client().get("/office/dashboard/audit").status_code == 302
