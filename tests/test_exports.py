"""Accounting exports: CSV an accountant can import, streamed, for a date range; owner only (issue 7)."""
import csv
import io
from datetime import date

import pytest

from portal.audit.services import Actor, record
from portal.billing.models import BillingStatus as S
from portal.extensions import db as _db
from portal.referrals.models import Partner, Payout, PayoutStatus, Referral
from tests import factories
from tests.dashboard_book import at, billed_job

RANGE = "start=2026-11-01&end=2026-11-30"


@pytest.fixture
def book(db, app, monkeypatch):
    monkeypatch.setitem(app.config, "BUSINESS_TIMEZONE", "America/New_York")
    client = factories.client(name="=HYPERLINK(\"http://evil\")")
    paid = billed_job(client, total=123456, status=S.PAID, amount_paid=123456, sent_at=at("2026-11-03 14:00"),
                      paid_at=at("2026-11-10 03:30"), due_at=at("2026-12-03 14:00"))  # paid 22:30 Nov 9 locally
    paid.invoice_number = "INV-0001"
    yen = billed_job(factories.client(name="Tokyo"), total=5000, currency="jpy", sent_at=at("2026-11-04 14:00"))
    refunded = billed_job(client, total=2500, status=S.PARTIALLY_REFUNDED, amount_paid=2500, amount_refunded=1000,
                          sent_at=at("2026-11-01 14:00"), paid_at=at("2026-11-02 14:00"),
                          refunded_at=at("2026-11-20 14:00"))
    billed_job(client, total=999, sent_at=at("2026-10-31 03:00"))  # Oct 30 locally: outside the range
    partner = Partner(name="Lee Chen Referrals")
    referral = Referral(partner=partner, client=client, starts_on=date(2026, 1, 1))
    _db.session.add_all([partner, referral])
    _db.session.flush()
    _db.session.add(Payout(job_id=paid.job_id, partner_id=partner.id, referral_id=referral.id,
                           billing_record_id=paid.id, currency="usd", amount_paid=123456, fee_base_amount=123456,
                           amount=12346, amount_reversed=346, status=PayoutStatus.PAID,
                           paid_on=at("2026-11-10 03:30"), transferred_at=at("2026-11-12 15:00"),
                           stripe_transfer_id="tr_123"))
    record(Actor.system("tests"), "billing.note", paid, job=paid.job, field="status", old="sent", new="paid",
           detail={"why": "test"})
    _db.session.commit()
    return {"paid": paid, "yen": yen, "refunded": refunded}


def download(browser, kind, query=RANGE):
    response = browser.get(f"/office/dashboard/exports/download?kind={kind}&{query}")
    assert response.status_code == 200, response.status_code
    assert response.mimetype == "text/csv"
    assert response.is_streamed
    assert f"closeout-{kind}-2026-11-01-to-2026-11-30.csv" in response.headers["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_invoices_export_has_iso_dates_major_units_and_a_currency(book, login, owner):
    rows = download(login(owner), "invoices")
    assert [row["job_number"] for row in rows] == [book["refunded"].job.number, book["paid"].job.number,
                                                   book["yen"].job.number]
    paid = rows[1]
    assert paid["invoice_date"] == "2026-11-03"
    assert paid["invoice_number"] == "INV-0001"
    assert (paid["currency"], paid["total"], paid["amount_paid"], paid["tax"]) == ("usd", "1234.56", "1234.56", "0.00")
    assert paid["paid_date"] == "2026-11-09"  # the business's calendar, not UTC's
    assert paid["client"].startswith("'=")  # never run as a spreadsheet formula
    assert (rows[2]["currency"], rows[2]["total"]) == ("jpy", "5000")  # no minor unit in yen


def test_payments_refunds_and_payouts_exports(book, login, owner):
    browser = login(owner)
    payments = download(browser, "payments")
    assert [(r["payment_date"], r["amount"], r["currency"]) for r in payments] == [
        ("2026-11-02", "25.00", "usd"), ("2026-11-09", "1234.56", "usd")]
    refunds = download(browser, "refunds")
    assert [(r["refund_date"], r["amount_refunded"], r["status"]) for r in refunds] == [
        ("2026-11-20", "10.00", "partially_refunded")]
    payouts = download(browser, "payouts")
    assert len(payouts) == 1
    payout = payouts[0]
    assert (payout["partner"], payout["fee"], payout["reversed"], payout["net_fee"], payout["transferred_date"],
            payout["stripe_transfer_id"]) == ("Lee Chen Referrals", "123.46", "3.46", "120.00", "2026-11-12", "tr_123")


def test_audit_export_lists_entries_in_the_range(book, login, owner):
    # Entries are stamped now; export the range around today.
    from portal.dashboard.services import business_today

    today = business_today().isoformat()
    browser = login(owner)
    response = browser.get(f"/office/dashboard/exports/download?kind=audit&start={today}&end={today}")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    note = [row for row in rows if row["action"] == "billing.note"]
    assert len(note) == 1
    assert (note[0]["source"], note[0]["job_number"], note[0]["old_value"], note[0]["new_value"]) == (
        "system", book["paid"].job.number, "sent", "paid")
    assert note[0]["timestamp_utc"].endswith("+00:00")
    assert note[0]["detail"] == '{"why": "test"}'


def test_an_empty_range_is_a_header_row_only(db, login, owner):
    response = login(owner).get("/office/dashboard/exports/download?kind=invoices&start=2001-01-01&end=2001-01-31")
    assert response.get_data(as_text=True).splitlines() == [
        "invoice_date,invoice_number,record_id,job_number,client,kind,status,currency,subtotal,tax,total,"
        "amount_paid,amount_refunded,due_date,paid_date,stripe_id"]


def test_an_unknown_export_is_refused(db, login, owner):
    assert login(owner).get("/office/dashboard/exports/download?kind=passwords").status_code == 422


def test_the_exports_page_links_each_export(db, login, owner):
    page = login(owner).get(f"/office/dashboard/exports?{RANGE}").get_data(as_text=True)
    for kind in ("invoices", "payments", "refunds", "payouts", "audit"):
        assert f"kind={kind}&amp;start=2026-11-01&amp;end=2026-11-30" in page


@pytest.mark.parametrize("role, status", [("office", 404), ("crew", 404), ("partner", 404), ("anonymous", 302)])
def test_only_the_owner_exports(app, login, office, crew, partner, role, status):
    users = {"office": office, "crew": crew, "partner": partner}
    browser = app.test_client() if role == "anonymous" else login(users[role])
    for url in ("/office/dashboard/exports", f"/office/dashboard/exports/download?kind=invoices&{RANGE}"):
        assert browser.get(url).status_code == status
