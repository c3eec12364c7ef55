"""The partner portal (issue 6): a partner's own referred clients, paid jobs, totals and monthly earnings, as a
page and a CSV, and never a customer's contact details, photos or notes, nor another partner's rows."""
import csv
import io
from datetime import datetime, timezone

import pytest

from portal.jobs.services import add_note
from portal.referrals.models import EntryKind, PayoutEntry
from portal.referrals.services import monthly_earnings, portal_status_totals
from tests import factories
from tests.fixtures.billing import photo_with_thumbnail

# Everything about the customer a partner must never see.
SECRETS = ("ap-secret@bayside.example.com", "555-0199", "77 Secret Lane", "12 Hidden Court", "Gate code 4321",
           "Dog is friendly, key under mat", "/photos/", "site.jpg", "Replace the kitchen faucet")


def at(year, month, day, hour=12):
    return datetime(year, month, day, hour, tzinfo=timezone.utc)


@pytest.fixture
def new_york(app):
    """The business in New York, so months are counted on its calendar, not UTC's."""
    saved = app.config["BUSINESS_TIMEZONE"]
    app.config["BUSINESS_TIMEZONE"] = "America/New_York"
    yield
    app.config["BUSINESS_TIMEZONE"] = saved


@pytest.fixture
def portal_world(db, partner, other_partner, new_york):
    """Partner Harbor with a client full of private details and hand-made payouts; partner Zeta with its own."""
    harbor = factories.partner(partner, name="Harbor Realty")
    bayside = factories.client(name="Bayside Rentals", billing_emails=["ap-secret@bayside.example.com"])
    bayside.phone, bayside.address = "555-0199", "77 Secret Lane"
    referral = factories.referral(harbor, client_row=bayside)
    site = factories.site(bayside, address="12 Hidden Court")

    def bayside_job():
        job = factories.job(bayside, site=site, customer_notes="Gate code 4321", items=[("Labor", "1", 10000)])
        add_note(job, "Dog is friendly, key under mat", by=factories.system())
        photo_with_thumbnail(job)
        db.session.commit()
        return job

    rows = {
        # October (New York): 1000 paid; 2000 with 500 reversed, paid at 02:00 UTC on Nov 1 = Oct 31 in New York.
        "paid": factories.payout(harbor, amount=1000, referral_row=referral, job_row=bayside_job(),
                                 paid_on=at(2026, 10, 5)),
        "partly_reversed": factories.payout(harbor, amount=2000, amount_reversed=500, referral_row=referral,
                                            job_row=bayside_job(), paid_on=at(2026, 11, 1, hour=2)),
        # November: held 400, pending 300, reversed 700 of 700 (earns 0), cancelled 900 (earns nothing, not a job).
        "held": factories.payout(harbor, amount=400, status="held", referral_row=referral, job_row=bayside_job(),
                                 paid_on=at(2026, 11, 3)),
        "pending": factories.payout(harbor, amount=300, status="pending", referral_row=referral,
                                    job_row=bayside_job(), paid_on=at(2026, 11, 6)),
        "reversed": factories.payout(harbor, amount=700, amount_reversed=700, status="reversed",
                                     referral_row=referral, job_row=bayside_job(), paid_on=at(2026, 11, 5)),
        "cancelled": factories.payout(harbor, amount=900, status="cancelled", referral_row=referral,
                                      job_row=bayside_job(), paid_on=at(2026, 11, 4)),
    }
    db.session.add(PayoutEntry(payout=rows["paid"], kind=EntryKind.TRANSFERRED, ref="tr_1", amount=1000))
    db.session.commit()
    zeta = factories.partner(other_partner, name="Zeta Brokers")
    zeta_client = factories.client(name="Zeta Corp Holdings")
    zeta_payout = factories.payout(zeta, amount=4242, referral_row=factories.referral(zeta, client_row=zeta_client),
                                   paid_on=at(2026, 11, 7))
    return harbor, rows, zeta_payout


def page_of(browser, url):
    response = browser.get(url)
    assert response.status_code == 200, url
    return response.get_data(as_text=True)


def test_the_portal_shows_the_partners_own_clients_jobs_and_totals(login, partner, portal_world):
    harbor, rows, zeta_payout = portal_world
    page = page_of(login(partner), "/partner")
    assert "Harbor Realty" in page and "Bayside Rentals" in page
    for name, payout in rows.items():
        assert payout.job.number in page, name
    assert "Fee on $100.00" in page and "$20.00" in page and "(−$5.00 reversed)" in page
    assert '<dd class="pending">$3.00</dd>' in page
    assert '<dd class="held">$4.00</dd>' in page
    assert '<dd class="paid">$25.00</dd>' in page
    assert '<dd class="reversed">$12.00</dd>' in page
    # Another partner's client, job and fee are not here.
    assert "Zeta" not in page and zeta_payout.job.number not in page and "$42.42" not in page


def test_the_portal_never_shows_customer_contact_details_photos_or_notes(login, partner, portal_world):
    harbor, rows, _ = portal_world
    browser = login(partner)
    pages = [page_of(browser, "/partner"), page_of(browser, "/partner/earnings.csv")]
    pages += [page_of(browser, f"/partner/payouts/{payout.id}") for payout in rows.values()]
    for text in pages:
        for secret in SECRETS:
            assert secret not in text


def test_monthly_earnings_are_summed_on_the_business_calendar(login, partner, portal_world):
    harbor, rows, _ = portal_world
    months = [(month.month, month.jobs, month.earned) for month in monthly_earnings(harbor)]
    # Oct: 1000 + (2000 − 500). Nov: 400 + 300 + (700 − 700); the cancelled payout is not a job.
    assert months == [("2026-11", 3, 700), ("2026-10", 2, 2500)]
    [totals] = portal_status_totals(harbor)
    assert (totals.pending, totals.held, totals.paid, totals.reversed) == (300, 400, 2500, 1200)
    page = page_of(login(partner), "/partner")
    november = page.index("November 2026")
    october = page.index("October 2026")
    assert november < october
    assert "3 jobs</span></span>\n      <strong>$7.00</strong>" in page[november:october]
    assert "2 jobs</span></span>\n      <strong>$25.00</strong>" in page[october:]


def test_the_csv_holds_the_partners_own_rows_exactly(login, partner, portal_world):
    harbor, rows, zeta_payout = portal_world
    response = login(partner).get("/partner/earnings.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert table[0] == ["paid_on", "job_number", "client", "currency", "fee_base_amount", "fee", "reversed", "net",
                        "status"]
    by_job = {row[1]: row for row in table[1:]}
    assert set(by_job) == {payout.job.number for payout in rows.values()}
    assert by_job[rows["partly_reversed"].job.number] == [
        "2026-10-31", rows["partly_reversed"].job.number, "Bayside Rentals", "USD", "100.00", "20.00", "5.00",
        "15.00", "paid"]
    assert by_job[rows["cancelled"].job.number][-1] == "cancelled"
    assert zeta_payout.job.number not in by_job


def test_a_partner_sees_their_own_payout_and_gets_404_for_another_partners(login, partner, other_partner,
                                                                           portal_world):
    harbor, rows, zeta_payout = portal_world
    browser = login(partner)
    page = page_of(browser, f"/partner/payouts/{rows['paid'].id}")
    assert rows["paid"].job.number in page and "Transferred" in page and "$10.00" in page
    assert browser.get(f"/partner/payouts/{zeta_payout.id}").status_code == 404
    assert login(other_partner).get(f"/partner/payouts/{rows['paid'].id}").status_code == 404
    # Nor can a partner reach the office's screens or the job itself.
    for url in (f"/office/jobs/{rows['paid'].job_id}", "/office/payouts", f"/office/partners/{harbor.id}",
                "/office/payouts.csv"):
        assert browser.get(url).status_code == 404, url


def test_a_partner_login_lands_on_the_portal_and_staff_do_not_see_it(db, app, login, office, partner):
    factories.partner(partner, name="Harbor Realty")
    response = app.test_client().post_form("/login", {"email": partner.email, "password": factories.PASSWORD})
    assert response.headers["Location"].endswith("/partner")
    assert login(partner).get("/").headers["Location"].endswith("/partner")
    assert login(office).get("/partner").status_code == 404


def test_a_partner_login_without_a_partner_row_gets_404_not_an_error(db, login, partner):
    assert login(partner).get("/partner").status_code == 404


def test_an_empty_portal_says_what_will_appear(db, login, partner):
    factories.partner(partner, name="Harbor Realty")
    page = page_of(login(partner), "/partner")
    assert "No fees yet" in page and "No paid jobs yet." in page and "Your payout account is not set up yet" in page
