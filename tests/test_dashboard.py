"""The owner dashboard: figures against a hand-computed book, aging boundaries, business-time "today",
billing lag, constant query counts, figure links and who sees what (issue 7)."""
import re
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, select

from portal.billing.models import BillingStatus as S
from portal.dashboard.services import (Period, Scope, billing_lags, business_today, dashboard_for, lag,
                                       ordered_percentile, period_for, seconds_between)
from portal.billing.models import BillingRecord
from portal.extensions import db as _db
from portal.jobs.models import Job, JobLineItem
from tests import factories
from tests.dashboard_book import at, billed_job

NEW_YORK = "America/New_York"
NOW = at("2026-11-27 15:00")  # 10:00 in New York
NOVEMBER = Period("range", date(2026, 11, 1), date(2026, 11, 30))


@pytest.fixture
def new_york(app, monkeypatch):
    monkeypatch.setitem(app.config, "BUSINESS_TIMEZONE", NEW_YORK)


@pytest.fixture
def book(db, new_york, crew):
    """A hand-computed November: what each figure must say is written beside each record."""
    harbor, other = factories.client(name="Harbor View"), factories.client(name="Other Co")
    rows = {
        # invoiced + paid in the period
        "a": billed_job(harbor, crew=[crew], total=10000, status=S.PAID, amount_paid=10000,
                        sent_at=at("2026-11-03 14:00"), paid_at=at("2026-11-10 14:00"), due_at=at("2026-12-03 14:00")),
        # invoiced, outstanding, not yet due (current)
        "b": billed_job(harbor, total=25000, sent_at=at("2026-11-05 14:00"), due_at=at("2026-12-05 14:00")),
        # sent in October, overdue 8 days (1–30)
        "c": billed_job(other, crew=[crew], total=40000, status=S.OVERDUE, sent_at=at("2026-10-20 14:00"),
                        due_at=at("2026-11-19 17:00")),
        # a draft awaiting approval
        "d": billed_job(other, total=5000, status=S.DRAFT),
        # invoiced, payment failed, one day late (1–30)
        "e": billed_job(other, total=7000, status=S.PAYMENT_FAILED, sent_at=at("2026-11-12 14:00"),
                        due_at=at("2026-11-26 17:00")),
        # invoiced, paid and refunded in the period
        "f": billed_job(harbor, total=3000, status=S.REFUNDED, amount_paid=3000, amount_refunded=3000,
                        sent_at=at("2026-11-02 14:00"), paid_at=at("2026-11-04 14:00"),
                        refunded_at=at("2026-11-15 14:00")),
        # another currency: invoiced and current
        "g": billed_job(other, total=9900, currency="eur", sent_at=at("2026-11-06 14:00"),
                        due_at=at("2027-01-01 14:00")),
        # voided: sent, but never owed; counted nowhere
        "h": billed_job(other, total=1234, status=S.VOID, live=False, sent_at=at("2026-11-07 14:00")),
    }
    failed = factories.job(other)
    failed.billing_status = S.FAILED
    _db.session.commit()
    return rows, harbor, failed


def figures(result):
    return {figure.key: (figure.count, figure.amounts) for figure in result.headlines}


def test_headline_figures_match_the_hand_computed_book(book, owner):
    result = dashboard_for(owner, NOVEMBER, Scope(), now=NOW)
    assert figures(result) == {
        "invoiced": (5, {"usd": 10000 + 25000 + 7000 + 3000, "eur": 9900}),
        "paid": (2, {"usd": 13000}),
        "outstanding": (4, {"usd": 25000 + 40000 + 7000, "eur": 9900}),
        "overdue": (2, {"usd": 47000}),
        "drafts": (1, {"usd": 5000}),
        "billing_failures": (1, {}),
        "payment_failures": (1, {"usd": 7000}),
        "refunds": (1, {"usd": 3000}),
        "disputes": (0, {}),
    }
    assert [(f.label, f.count, f.amounts) for f in result.aging] == [
        ("Current", 2, {"usd": 25000, "eur": 9900}), ("1–30 days", 2, {"usd": 47000}),
        ("31–60 days", 0, {}), ("61–90 days", 0, {}), ("90+ days", 0, {})]


def test_client_and_crew_filters_narrow_every_figure(book, owner, crew):
    _, harbor, _ = book
    by_client = figures(dashboard_for(owner, NOVEMBER, Scope(client_id=harbor.id), now=NOW))
    assert by_client["invoiced"] == (3, {"usd": 38000})
    assert by_client["outstanding"] == (1, {"usd": 25000})
    assert by_client["billing_failures"] == (0, {})
    by_crew = figures(dashboard_for(owner, NOVEMBER, Scope(crew_id=crew.id), now=NOW))
    assert by_crew["invoiced"] == (1, {"usd": 10000})
    assert by_crew["overdue"] == (1, {"usd": 40000})


def test_office_sees_the_operational_parts_only(book, office):
    result = dashboard_for(office, NOVEMBER, Scope(), now=NOW)
    assert [f.key for f in result.headlines] == ["overdue", "drafts", "billing_failures", "payment_failures"]
    assert result.trend is None and result.fees is None


@pytest.mark.parametrize("days_late, bucket", [
    (0, "Current"), (1, "1–30 days"), (30, "1–30 days"), (31, "31–60 days"), (60, "31–60 days"),
    (61, "61–90 days"), (90, "61–90 days"), (91, "90+ days")])
def test_aging_bucket_boundaries(db, new_york, owner, days_late, bucket):
    today = business_today(NOW)
    zone = ZoneInfo(NEW_YORK)
    # Due at 23:30 local: the UTC date is the next day, the bucket must still follow the business's calendar.
    due = datetime.combine(today - timedelta(days=days_late), time(23, 30), tzinfo=zone).astimezone(timezone.utc)
    billed_job(total=1111, due_at=due, sent_at=at("2026-01-01 12:00"))
    aging = dashboard_for(owner, NOVEMBER, Scope(), now=NOW).aging
    assert {f.label: f.count for f in aging if f.count} == {bucket: 1}


def test_today_is_the_business_day_not_the_utc_day(db, new_york, owner):
    now = at("2026-11-27 04:45")  # Thursday Nov 26, 23:45 in New York
    billed_job(total=1000, status=S.PAID, amount_paid=1000, sent_at=at("2026-11-20 12:00"),
               paid_at=at("2026-11-27 04:30"))  # 23:30 on Nov 26 locally: today
    billed_job(total=2000, status=S.PAID, amount_paid=2000, sent_at=at("2026-11-20 12:00"),
               paid_at=at("2026-11-26 04:30"))  # 23:30 on Nov 25 locally: yesterday, though UTC says Nov 26
    today = period_for("today", today=business_today(now))
    assert today.first_day == date(2026, 11, 26)
    assert figures(dashboard_for(owner, today, Scope(), now=now))["paid"] == (1, {"usd": 1000})


def test_periods_in_business_time(db, new_york):
    today = date(2026, 11, 27)  # a Friday
    assert period_for("week", today=today).first_day == date(2026, 11, 23)
    assert period_for("month", today=today).first_day == date(2026, 11, 1)
    backwards = period_for("range", today=today, first_day=date(2026, 11, 9), last_day=date(2026, 11, 2))
    assert (backwards.first_day, backwards.last_day) == (date(2026, 11, 2), date(2026, 11, 9))
    assert period_for("today", today=today).start == at("2026-11-27 05:00")  # midnight EST


HOUR, DAY = 3600, 86400


def test_billing_lag_median_and_p90(db, owner):
    completed = at("2026-11-10 08:00")
    for hours in (1, 2, 3, 4, 10):
        billed_job(completed_at=completed, sent_at=completed + timedelta(hours=hours))
    for days in (1, 3):
        sent = at("2026-11-12 09:00")
        billed_job(completed_at=sent, status=S.PAID, amount_paid=10000, sent_at=sent,
                   paid_at=sent + timedelta(days=days))
    lags = billing_lags(NOVEMBER, Scope())
    sent = lags["completion_to_sent"]
    # The two paid records were sent the moment they were completed: lags 0, 0, 1, 2, 3, 4, 10 hours.
    assert sent.count == 7
    assert sent.median == pytest.approx(2 * HOUR)
    assert sent.p90 == pytest.approx((4 + 0.4 * 6) * HOUR)  # position 0.9 × 6 = 5.4: 4 h + 0.4 × (10 − 4) h
    paid = lags["sent_to_paid"]
    assert (paid.count, paid.median, paid.p90) == (2, pytest.approx(2 * DAY), pytest.approx(2.8 * DAY))


def test_the_ordered_read_fallback_agrees_with_percentile_cont(db):
    completed = at("2026-11-10 08:00")
    for minutes in (5, 7, 30, 31, 90, 400):
        billed_job(completed_at=completed, sent_at=completed + timedelta(minutes=minutes))
    base = select(BillingRecord)
    seconds = seconds_between(BillingRecord.work_completed_at, BillingRecord.sent_at)
    expected = lag(BillingRecord.work_completed_at, BillingRecord.sent_at, [])
    assert ordered_percentile(base, seconds, 6, 0.5) == pytest.approx(expected.median)
    assert ordered_percentile(base, seconds, 6, 0.9) == pytest.approx(expected.p90)


class StatementCounter:
    def __init__(self, engine):
        self.engine, self.count = engine, 0

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self.seen)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self.seen)

    def seen(self, *args):
        self.count += 1


def add_jobs(count, crew):
    client = factories.client()
    for n in range(count):
        billed_job(client, crew=[crew], total=1000 + n, status=S.PAID if n % 2 else S.SENT,
                   amount_paid=1000 + n if n % 2 else 0, sent_at=at("2026-11-03 12:00") + timedelta(hours=n),
                   paid_at=at("2026-11-20 12:00") if n % 2 else None, due_at=at("2026-11-10 12:00"))


def statements_for(app, client, url):
    with app.app_context(), StatementCounter(_db.engine) as counter:
        response = client.get(url)
    assert response.status_code == 200
    return counter.count


def test_query_count_is_constant_whatever_the_row_count(app, login, owner, crew):
    browser = login(owner)
    urls = ["/office/dashboard?period=range&start=2026-11-01&end=2026-11-30",
            f"/office/dashboard?period=month&crew={crew.id}",
            "/office/jobs?figure=overdue&period_from=2026-11-01&period_to=2026-11-30"]
    add_jobs(5, crew)
    few = [statements_for(app, browser, url) for url in urls]
    add_jobs(45, crew)
    many = [statements_for(app, browser, url) for url in urls]
    assert few == many
    assert few[0] <= 15


def job_numbers_listed(html):
    return set(re.findall(r"<strong>(J-\d+)</strong>", html))


@pytest.mark.parametrize("figure, rows", [
    ("overdue", "ce"), ("invoiced", "abefg"), ("paid", "af"), ("outstanding", "bceg"), ("drafts", "d"),
    ("aging_current", "bg"), ("aging_1_30", "ce"), ("refunds", "f"), ("payment_failures", "e")])
def test_each_figure_links_to_exactly_the_jobs_it_counts(app, book, login, owner, figure, rows, monkeypatch):
    records, _, _ = book
    monkeypatch.setattr("portal.office.forms.business_today", lambda: business_today(NOW))
    browser = login(owner)
    page = browser.get("/office/dashboard?period=range&start=2026-11-01&end=2026-11-30").get_data(as_text=True)
    link = re.search(rf'href="([^"]*figure={figure}[^"]*)"', page)
    assert link, f"no link for {figure}"
    listed = browser.get(link.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert job_numbers_listed(listed) == {records[key].job.number for key in rows}


def test_billing_failures_link_lists_the_failed_job(book, login, owner):
    _, _, failed = book
    listed = login(owner).get("/office/jobs?figure=billing_failures").get_data(as_text=True)
    assert job_numbers_listed(listed) == {failed.number}
    assert "billing failures" in listed.lower()


def test_owner_page_shows_cash_trend_and_fees(book, login, owner):
    page = login(owner).get("/office/dashboard?period=range&start=2026-11-01&end=2026-11-30").get_data(as_text=True)
    for text in ("Invoiced", "$450.00", "€99.00", "Outstanding", "Receivables aging", "Billing lag",
                 "Billed vs collected", "<svg", "Referral fees owed", "Webhook health", "/webhooks/issues"):
        assert text in page, text
    assert "<script" not in page.split("</head>", 1)[1]  # charts need no JavaScript


def test_office_page_hides_the_cash_figures(book, login, office):
    page = login(office).get("/office/dashboard?period=range&start=2026-11-01&end=2026-11-30").get_data(as_text=True)
    assert "Overdue" in page and "Drafts awaiting approval" in page and "Receivables aging" in page
    for text in ("Invoiced", "Referral fees", "Billed vs collected", "Audit log"):
        assert text not in page, text


@pytest.mark.parametrize("role, status", [("crew", 404), ("partner", 404), ("anonymous", 302)])
def test_crew_partners_and_strangers_never_see_it(app, login, crew, partner, role, status):
    browser = app.test_client() if role == "anonymous" else login({"crew": crew, "partner": partner}[role])
    response = browser.get("/office/dashboard")
    assert response.status_code == status
    if status == 302:
        assert "/login" in response.headers["Location"]


def test_milestones_are_stamped_once_when_a_status_first_reaches_them(db):
    record = billed_job(status=S.DRAFT)
    assert record.sent_at is None
    record.status = S.SENT
    sent_at = record.sent_at
    assert sent_at is not None and record.paid_at is None
    record.status = S.PAID
    assert record.sent_at == sent_at and record.paid_at is not None


def test_seed_demo_adds_a_large_book_in_bulk(app, db):
    from portal.auth.services import find_user_by_email
    from portal.demo.seed import OWNER_EMAIL

    result = app.test_cli_runner().invoke(args=["seed-demo", "--jobs", "300"])
    assert result.exit_code == 0, result.output
    assert "Added 300 past jobs with" in result.output
    total = _db.session.scalar(select(_db.func.count()).select_from(Job))
    assert total == 300 + 11  # the demo day's eleven jobs, then the book
    later = factories.job()  # the id sequence moved past the book's explicit ids: numbers stay unique
    assert later.number == f"J-{total + 1:05d}"
    owner = find_user_by_email(OWNER_EMAIL)
    year = period_for("range", today=business_today(), first_day=business_today() - timedelta(days=365),
                      last_day=business_today())
    book = figures(dashboard_for(owner, year, Scope()))
    assert book["invoiced"][0] > 200 and book["paid"][0] > 100
    assert book["paid"][1]["usd"] == _db.session.scalar(
        select(_db.func.sum(BillingRecord.amount_paid)).where(BillingRecord.paid_at.is_not(None)))
    # The bulk rows keep what the ORM's listeners keep for the others: each job's lines total, and each
    # record's copy of its job's completion time.
    lines = select(_db.func.coalesce(_db.func.sum(JobLineItem.amount + JobLineItem.tax_amount), 0)).where(
        JobLineItem.job_id == Job.id).scalar_subquery()
    assert _db.session.scalar(select(_db.func.count()).select_from(Job).where(Job.lines_total != lines)) == 0
    assert _db.session.scalar(select(_db.func.count()).select_from(BillingRecord).join(Job).where(
        BillingRecord.work_completed_at.is_distinct_from(Job.completed_at))) == 0


def test_sqlite_gets_the_same_figures_without_percentile_cont(embedded_sqlite):
    owner = factories.user("owner")
    completed = at("2026-11-10 08:00")
    for hours in (1, 2, 3, 4, 10):
        billed_job(completed_at=completed, sent_at=completed + timedelta(hours=hours), total=10000,
                   due_at=at("2026-11-20 12:00"))
    lags = billing_lags(NOVEMBER, Scope())["completion_to_sent"]
    assert (lags.count, lags.median, lags.p90) == (5, pytest.approx(3 * HOUR), pytest.approx(7.6 * HOUR))
    result = figures(dashboard_for(owner, NOVEMBER, Scope(), now=NOW))
    assert result["invoiced"] == (5, {"usd": 50000})
    assert result["overdue"] == (5, {"usd": 50000})


def test_trend_buckets_by_day_week_or_month(db, new_york):
    from portal.dashboard.services import trend, trend_buckets

    assert trend_buckets(NOVEMBER) == ("day", [date(2026, 11, d) for d in range(1, 31)])
    unit, starts = trend_buckets(Period("range", date(2026, 9, 2), date(2026, 11, 27)))
    assert unit == "week" and starts[0] == date(2026, 8, 31) and starts[-1] == date(2026, 11, 23)
    unit, starts = trend_buckets(Period("range", date(2025, 11, 28), date(2026, 11, 27)))
    assert unit == "month" and starts[0] == date(2025, 11, 1) and len(starts) == 13
    # 23:30 on Nov 3 in New York is Nov 4 in UTC: it is Nov 3's bar.
    billed_job(total=4200, status=S.PAID, amount_paid=4200, sent_at=at("2026-11-04 04:30"),
               paid_at=at("2026-11-09 15:00"))
    _, points = trend(NOVEMBER, Scope())
    assert {p.day: p.billed for p in points if p.billed} == {date(2026, 11, 3): {"usd": 4200}}
    assert {p.day: p.collected for p in points if p.collected} == {date(2026, 11, 9): {"usd": 4200}}


def test_the_trend_adds_up_to_the_invoiced_and_paid_figures(book, owner):
    result = dashboard_for(owner, NOVEMBER, Scope(), now=NOW)
    headline = {figure.key: figure.amounts for figure in result.headlines}
    for series, key in (("billed", "invoiced"), ("collected", "paid")):
        summed = {}
        for point in result.trend:
            for currency, amount in getattr(point, series).items():
                summed[currency] = summed.get(currency, 0) + amount
        assert summed == headline[key], series  # the voided record sent on Nov 7 is in neither


def test_the_trend_chart_draws_a_bar_per_series_and_bucket(book, login, owner):
    page = login(owner).get("/office/dashboard?period=range&start=2026-11-01&end=2026-11-30").get_data(as_text=True)
    chart = page.split('<svg viewBox="0 0 340 180"', 1)[1].split("</svg>", 1)[0]
    assert chart.count("<rect") == 60  # 30 days × (billed, collected)
    assert "Nov 3: $100.00 billed" in chart and "Nov 10: $100.00 collected" in chart


def test_the_owner_lands_on_the_dashboard_and_the_office_on_the_job_list(client, owner, office):
    for user, home in ((owner, "/office/dashboard"), (office, "/office/jobs")):
        response = client.post_form("/login", {"email": user.email, "password": factories.PASSWORD})
        assert response.status_code == 302 and response.headers["Location"].endswith(home)
        client.post_form("/logout")
