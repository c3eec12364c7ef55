"""The office's live job board, its cheap poll, the job page's payment timeline and the crew's paid indicator."""
import re
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, update

from portal.audit.models import Source
from portal.audit.services import Actor
from portal.billing import pipeline
from portal.billing.models import BillingStatus
from portal.extensions import db as _db
from portal.jobs.models import Job, WorkStatus
from portal.jobs.services import add_line_item, add_note, remove_line_item, update_line_item
from portal.timeutil import utcnow
from tests import factories
from tests.fixtures.billing import billed_record

WEBHOOK = Actor(Source.WEBHOOK, "evt_paid_1", "Stripe event evt_paid_1")


@contextmanager
def statements():
    """Every SQL statement the app sends while the block runs."""
    seen = []

    def note(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(_db.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(_db.engine, "before_cursor_execute", note)


def group_html(page, key):
    """The markup of one board group, from its opening tag to the next group's."""
    start = page.index(f'id="board-group-{key}"')
    end = page.find('<section class="board-group"', start)
    return page[start:end if end != -1 else len(page)]


def group_summary(page, key):
    """(count text, [amount texts]) as the group's header shows them."""
    markup = group_html(page, key)
    count = re.search(r'data-count>([^<]+)<', markup).group(1)
    return count, re.findall(r'data-amount="\w+">([^<]+)<', markup)


def board_version_of(page):
    return re.search(r'data-version="([^"]+)"', page).group(1).replace("&#34;", '"')


def job_in(work, billing=BillingStatus.NOT_BILLED, items=(), client_row=None, crew=()):
    """A job put straight into a work and billing status, as the board sees it."""
    job = factories.job(client_row, items=items, crew=crew)
    job.work_status = work
    job.billing_status = billing
    _db.session.commit()
    return job


@pytest.fixture
def office_client(login, office):
    return login(office)


@pytest.fixture
def hand_built_board(db, crew):
    usd = factories.client(name="Harbor View")
    eur = factories.client(name="Kanal Haus", currency="eur")
    jobs = {
        "scheduled": job_in(WorkStatus.SCHEDULED, crew=[crew]),
        "in_progress": job_in(WorkStatus.IN_PROGRESS, items=[("Labor", "1.5", 8500)], client_row=usd),
        "ready": job_in(WorkStatus.COMPLETED, BillingStatus.READY_TO_BILL, items=[("Labor", "1", 10000)]),
        "pending": job_in(WorkStatus.COMPLETED, BillingStatus.PENDING, items=[("Filter", "2", 1250)]),
        "sent_usd": job_in(WorkStatus.COMPLETED, BillingStatus.SENT, items=[("Labor", "2", 8500)], client_row=usd),
        "sent_eur": job_in(WorkStatus.COMPLETED, BillingStatus.SENT, items=[("Arbeit", "1", 9900)], client_row=eur),
        "paid": job_in(WorkStatus.COMPLETED, BillingStatus.PAID, items=[("Labor", "1", 5000)]),
        "paid_long_ago": job_in(WorkStatus.COMPLETED, BillingStatus.PAID, items=[("Labor", "1", 7000)]),
        "billing_failed": job_in(WorkStatus.COMPLETED, BillingStatus.FAILED, items=[("Labor", "1", 3000)]),
        "payment_failed": job_in(WorkStatus.COMPLETED, BillingStatus.PAYMENT_FAILED, items=[("Labor", "1", 4000)]),
        "no_charge": job_in(WorkStatus.COMPLETED, BillingStatus.NO_CHARGE),
        "void": job_in(WorkStatus.COMPLETED, BillingStatus.VOID, items=[("Labor", "1", 6000)]),
    }
    _db.session.execute(update(Job).where(Job.id == jobs["paid_long_ago"].id)
                        .values(updated_at=utcnow() - timedelta(days=8)))
    _db.session.commit()
    return jobs


def test_board_groups_jobs_with_counts_and_amounts(office_client, hand_built_board):
    jobs = hand_built_board
    response = office_client.get("/office/board")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    order = re.findall(r'id="board-group-(\w+)"', page)
    assert order == ["scheduled", "in_progress", "billing_pending", "draft", "sent", "processing", "paid",
                     "overdue", "failed"]
    assert group_summary(page, "scheduled") == ("1 job", ["$0.00"])
    assert group_summary(page, "in_progress") == ("1 job", ["$127.50"])
    assert group_summary(page, "billing_pending") == ("2 jobs", ["$125.00"])
    assert group_summary(page, "draft") == ("0 jobs", [])
    assert group_summary(page, "sent") == ("2 jobs", ["€99.00", "$170.00"])
    assert group_summary(page, "paid") == ("1 job", ["$50.00"])
    assert group_summary(page, "failed") == ("2 jobs", ["$70.00"])
    failed = group_html(page, "failed")
    assert "Billing failed" in failed and "Payment failed" in failed
    assert f'id="board-job-{jobs["paid"].id}"' in group_html(page, "paid")
    for off_board in ("paid_long_ago", "no_charge", "void"):
        assert f'id="board-job-{jobs[off_board].id}"' not in page
    card = group_html(page, "scheduled")
    assert jobs["scheduled"].number in card and "Casey Crew" in card
    assert "Harbor View" in group_html(page, "sent") and "Kanal Haus" in group_html(page, "sent")


def test_sent_card_shows_its_due_date(office_client, db):
    billed = billed_record(status=BillingStatus.SENT)
    page = office_client.get("/office/board").get_data(as_text=True)
    card = group_html(page, "sent")
    assert billed.job.number in card and "Due " in card and "$170.00" in card


def card_ids(page, key):
    return [int(found) for found in re.findall(r'id="board-job-(\d+)"', group_html(page, key))]


def test_the_amounts_follow_line_changes_and_removals(office_client, db, office):
    job = job_in(WorkStatus.IN_PROGRESS, items=[("Labor", "2", 8500), ("Filter", "1", 1250)])
    labor, part = job.line_items
    assert group_summary(office_client.get("/office/board").get_data(as_text=True), "in_progress") == (
        "1 job", ["$182.50"])
    update_line_item(labor, by=factories.system(), quantity="3")
    _db.session.commit()
    assert group_summary(office_client.get("/office/board").get_data(as_text=True), "in_progress") == (
        "1 job", ["$267.50"])
    remove_line_item(part, by=factories.system())
    _db.session.commit()
    _db.session.expire_all()
    assert _db.session.get(Job, job.id).lines_total == 25500
    assert group_summary(office_client.get("/office/board").get_data(as_text=True), "in_progress") == (
        "1 job", ["$255.00"])


def test_each_column_shows_its_first_cards_in_board_order_and_counts_the_rest(office_client, db, monkeypatch):
    from portal.board import services

    monkeypatch.setattr(services, "CARDS_PER_GROUP", 3)
    sent = [job_in(WorkStatus.COMPLETED, BillingStatus.SENT, items=[("Labor", "1", 100)]) for _ in range(5)]
    for hours, job in zip((5, 1, 4, 2, 3), sent):
        job.scheduled_start = utcnow() - timedelta(hours=hours)
    paid = [job_in(WorkStatus.COMPLETED, BillingStatus.PAID, items=[("Labor", "1", 100)]) for _ in range(4)]
    # Work ranks before billing: a job back in progress is on the board once, under In progress.
    back_in_progress = job_in(WorkStatus.IN_PROGRESS, BillingStatus.SENT, items=[("Labor", "1", 100)])
    _db.session.commit()
    for days, job in zip((3, 1, 2, 4), paid):
        _db.session.execute(update(Job).where(Job.id == job.id).values(updated_at=utcnow() - timedelta(days=days)))
    _db.session.commit()
    page = office_client.get("/office/board").get_data(as_text=True)
    assert card_ids(page, "sent") == [sent[0].id, sent[2].id, sent[4].id]  # the earliest scheduled first
    assert group_summary(page, "sent")[0] == "5 jobs" and "and 2 more" in group_html(page, "sent")
    assert card_ids(page, "paid") == [paid[1].id, paid[2].id, paid[0].id]  # the latest payment first
    assert card_ids(page, "in_progress") == [back_in_progress.id]
    assert group_summary(page, "in_progress") == ("1 job", ["$1.00"])


def test_the_board_reads_the_same_on_the_embedded_sqlite_default(embedded_sqlite):
    from portal.board.services import board

    first, later = job_in(WorkStatus.SCHEDULED), job_in(WorkStatus.SCHEDULED)
    later.scheduled_start = first.scheduled_start + timedelta(days=1)
    job_in(WorkStatus.COMPLETED, BillingStatus.OVERDUE, items=[("Labor", "2", 4500)])
    job_in(WorkStatus.COMPLETED, BillingStatus.PAID, items=[("Labor", "1", 1000)])
    _db.session.commit()
    groups = {view.group.key: view for view in board()}
    assert [card.job.id for card in groups["scheduled"].cards] == [first.id, later.id]
    assert (groups["overdue"].count, groups["overdue"].amounts) == (1, {"usd": 9000})
    assert (groups["paid"].count, groups["paid"].amounts) == (1, {"usd": 1000})


POLL_HEADERS = {"HX-Request": "true"}


def poll(client, version):
    return client.get("/office/board/poll", headers={**POLL_HEADERS, "If-None-Match": version})


@pytest.fixture
def poll_caches(app, monkeypatch):
    """The poll's caches switched on (tests otherwise run with a TTL of 0), and a way to step past their TTL."""
    from portal.board import fast_poll

    monkeypatch.setitem(app.config, "BOARD_VERSION_TTL_SECONDS", 30.0)
    clock = [0.0]
    real_monotonic = fast_poll.monotonic
    monkeypatch.setattr(fast_poll, "monotonic", lambda: real_monotonic() + clock[0])

    def step_past_ttl():
        clock[0] += 31.0

    yield step_past_ttl
    # Entries stamped on the stepped clock would outlive this test, and user ids restart with the tables.
    for name in ("board.version", "board.poller_roles", "board.staff_sessions"):
        app.extensions.pop(name, None)


def test_unchanged_poll_is_answered_from_the_version_alone(office_client, hand_built_board):
    page = office_client.get("/office/board")
    version = page.headers["ETag"]
    assert board_version_of(page.get_data(as_text=True)) == version
    _db.session.expunge_all()  # as in a real request, the user is loaded afresh, not from this test's session
    with statements() as sent:
        response = poll(office_client, version)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert len(sent) == 2, sent  # with no cache (TTL 0): the poller's role, then the version; nothing else
    assert "FROM users" in sent[0] and "password_hash" not in sent[0]
    assert "max(jobs.updated_at)" in sent[1] and "max(jobs.id)" in sent[1]


def test_within_the_ttl_an_unchanged_poll_sends_no_sql_and_after_it_rereads(office_client, hand_built_board,
                                                                            poll_caches):
    version = office_client.get("/office/board").headers["ETag"]  # the page also primes the version cache
    assert poll(office_client, version).status_code == 204  # primes the poller's role
    _db.session.expunge_all()
    with statements() as sent:
        for _ in range(3):
            response = poll(office_client, version)
            assert response.status_code == 204 and response.get_data() == b""
            assert response.headers["ETag"] == version
    assert sent == []
    poll_caches()
    with statements() as sent:
        assert poll(office_client, version).status_code == 204
    assert len(sent) == 2, sent  # both caches expired together: the poller's role, then the version
    assert "FROM users" in sent[0]
    assert "max(jobs.updated_at)" in sent[1] and "max(jobs.id)" in sent[1]
    with statements() as sent:
        assert poll(office_client, version).status_code == 204
    assert sent == []


def test_a_change_reaches_the_poll_once_the_version_cache_expires(office_client, hand_built_board, poll_caches):
    job = hand_built_board["in_progress"]
    version = office_client.get("/office/board").headers["ETag"]
    add_line_item(job, by=factories.system(), description="Valve", quantity="1", unit_amount=2250)
    _db.session.commit()
    assert poll(office_client, version).status_code == 204  # stale for at most the TTL, by design
    poll_caches()
    response = poll(office_client, version)
    assert response.status_code == 200
    assert "$150.00" in group_html(response.get_data(as_text=True), "in_progress")
    new_version = response.headers["ETag"]
    assert new_version != version
    with statements() as sent:
        assert poll(office_client, new_version).status_code == 204
    assert sent == []  # the changed answer refreshed the cache


def test_a_page_newer_than_the_cached_version_gets_204_not_a_rerender(office_client, hand_built_board, poll_caches):
    job = hand_built_board["in_progress"]
    old_version = office_client.get("/office/board").headers["ETag"]
    assert poll(office_client, old_version).status_code == 204
    add_line_item(job, by=factories.system(), description="Valve", quantity="1", unit_amount=2250)
    _db.session.commit()
    other_tab = office_client.get("/office/board")  # a fresh page: the new version, while other polls cached the old
    assert other_tab.headers["ETag"] != old_version
    response = poll(office_client, other_tab.headers["ETag"])
    assert response.status_code == 204 and response.get_data() == b""


def test_deactivated_poller_is_signed_out_and_a_demoted_one_gets_404(office_client, office, hand_built_board):
    version = office_client.get("/office/board").headers["ETag"]
    assert poll(office_client, version).status_code == 204
    office.role = "crew"
    _db.session.commit()
    assert poll(office_client, version).status_code == 404
    office.role, office.active = "office", False
    _db.session.commit()
    response = poll(office_client, version)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_deactivation_reaches_a_cached_poller_within_the_ttl(office_client, office, hand_built_board, poll_caches):
    version = office_client.get("/office/board").headers["ETag"]
    assert poll(office_client, version).status_code == 204
    office.active = False
    _db.session.commit()
    assert poll(office_client, version).status_code == 204  # the poll's role is cached for up to the TTL
    poll_caches()
    response = poll(office_client, version)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    # The page loads the user row at once (and drops the dead cookie, so every later poll is refused too).
    assert office_client.get("/office/board").status_code == 302


def test_a_changed_job_changes_the_version_and_the_poll_returns_its_card(office_client, hand_built_board):
    job = hand_built_board["in_progress"]
    version = office_client.get("/office/board").headers["ETag"]
    add_line_item(job, by=factories.system(), description="Valve", quantity="1", unit_amount=2250)
    _db.session.commit()
    response = office_client.get("/office/board/poll", headers={"HX-Request": "true", "If-None-Match": version})
    assert response.status_code == 200
    assert response.headers["ETag"] != version
    page = response.get_data(as_text=True)
    assert page.lstrip().startswith('<div id="board"')
    assert "$150.00" in group_html(page, "in_progress")
    assert board_version_of(page) == response.headers["ETag"]


def test_a_payment_moves_the_card_to_paid_on_the_next_poll(office_client, db):
    billed = billed_record(status=BillingStatus.SENT)
    version = office_client.get("/office/board").headers["ETag"]
    pipeline.move_record(billed.record, BillingStatus.PAID, by=WEBHOOK)
    response = office_client.get("/office/board/poll", headers={"HX-Request": "true", "If-None-Match": version})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f'id="board-job-{billed.job.id}"' in group_html(page, "paid")
    assert f'id="board-job-{billed.job.id}"' not in group_html(page, "sent")
    assert group_summary(page, "paid") == ("1 job", ["$170.00"])


def test_the_board_costs_the_same_queries_for_5_or_50_jobs(office_client, db, crew):
    def queries_for_board():
        _db.session.expunge_all()  # nothing cached from building the rows: every lazy load would show
        with statements() as sent:
            assert office_client.get("/office/board").status_code == 200
        return len(sent)

    client_row = factories.client()
    for _ in range(5):
        job_in(WorkStatus.COMPLETED, BillingStatus.SENT, items=[("Labor", "1", 100)], client_row=client_row, crew=[crew])
    few = queries_for_board()
    for n in range(45):
        status = [BillingStatus.SENT, BillingStatus.PAID, BillingStatus.OVERDUE][n % 3]
        job_in(WorkStatus.COMPLETED, status, items=[("Labor", "1", 100), ("Part", "2", 50)],
               client_row=factories.client(), crew=[crew])
    many = queries_for_board()
    assert few == many, (few, many)
    page = office_client.get("/office/board").get_data(as_text=True)
    assert group_summary(page, "sent") == ("20 jobs", ["$35.00"])


@pytest.mark.parametrize("url", ["/office/board", "/office/board/poll"])
@pytest.mark.parametrize("role", ["crew", "partner"])
def test_only_staff_reach_the_board(login, request, url, role):
    response = login(request.getfixturevalue(role)).get(url)
    assert response.status_code == 404


def test_owner_sees_the_board_and_anonymous_is_sent_to_sign_in(app, login, owner):
    assert login(owner).get("/office/board").status_code == 200
    response = app.test_client().get("/office/board/poll")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_staff_nav_links_to_the_board(office_client):
    page = office_client.get("/office/jobs").get_data(as_text=True)
    assert 'href="/office/board"' in page


def test_job_page_shows_the_payment_timeline_in_order(office_client, db):
    billed = billed_record(status=BillingStatus.SENT)
    job = billed.job
    add_note(job, "Customer asked for a receipt", by=factories.system())
    pipeline.move_record(billed.record, BillingStatus.PAID, by=WEBHOOK)
    page = office_client.get(f"/office/jobs/{job.id}").get_data(as_text=True)
    start = page.index('id="payment-timeline"')
    timeline = page[start:page.index("</section>", start)]
    assert "Customer asked for a receipt" not in timeline  # notes are not payments
    assert "job.created" not in timeline
    assert "<strong>Billing started</strong>" in timeline  # said as the office says it, not as code
    triggered = timeline.index('data-action="billing.triggered"')
    pending = timeline.index("→ <strong>pending</strong>")
    paid = timeline.index("→ <strong>paid</strong>")
    assert triggered < paid and pending < paid
    assert "Stripe webhook" in timeline[timeline.rindex("<li", 0, paid):paid]
    assert "evt_paid_1" in timeline


@pytest.fixture
def crew_billed(db, crew):
    billed = billed_record(crew=[crew], status=BillingStatus.SENT)
    return billed


def paid_status_element(page):
    match = re.search(r'<p id="paid-status"[^>]*>.*?</p>', page, re.S)
    return match.group(0) if match else None


def test_crew_card_polls_while_unpaid_then_shows_paid_and_stops(login, crew, crew_billed):
    client = login(crew)
    url = f"/crew/jobs/{crew_billed.job.id}"
    waiting = paid_status_element(client.get(url).get_data(as_text=True))
    assert "Waiting for the customer to pay" in waiting
    assert 'hx-trigger="every 15s"' in waiting and 'hx-select="#paid-status"' in waiting

    pipeline.move_record(crew_billed.record, BillingStatus.PAID, by=WEBHOOK)
    # The poll is a GET of the job page with HX-Request; htmx picks #paid-status out of it.
    paid = paid_status_element(client.get(url, headers={"HX-Request": "true"}).get_data(as_text=True))
    assert "Paid ✓" in paid
    assert "hx-trigger" not in paid and "hx-get" not in paid


def test_crew_job_list_marks_paid_jobs(login, crew, crew_billed):
    client = login(crew)
    assert "Paid ✓" not in client.get("/crew/jobs").get_data(as_text=True)
    pipeline.move_record(crew_billed.record, BillingStatus.PAID, by=WEBHOOK)
    page = client.get("/crew/jobs").get_data(as_text=True)
    assert crew_billed.job.number in page and "Paid ✓" in page


def test_crew_card_of_a_void_job_neither_polls_nor_says_paid(login, crew, crew_billed):
    pipeline.move_record(crew_billed.record, BillingStatus.VOID, by=factories.system())
    page = login(crew).get(f"/crew/jobs/{crew_billed.job.id}").get_data(as_text=True)
    assert paid_status_element(page) is None
    assert "every 15s" not in page

