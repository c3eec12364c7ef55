"""Office referral screens (issue 6): partner setup, attribution on the client and job pages, the payouts ledger."""
import re
from datetime import date, datetime, timezone

import pytest

from portal.audit.models import AuditEntry
from portal.auth.models import Role, User
from portal.billing.models import BillingRecord, BillingStatus, RecordKind
from portal.clients.models import Client
from portal.queue import get_queue
from portal.referrals.models import (AccountStatus, DisputePolicy, FeeBase, FeeKind, Partner, PayoutStatus,
                                     Referral)
from portal.referrals.services import LedgerFilters, ledger_totals
from tests import factories
from tests.conftest import PASSWORD
from tests.fixtures.stripe_sandbox import no_redirect_post


def partner_form(**overrides):
    data = {
        "name": "Harbor Realty", "contact_name": "Rita Realtor", "email": "Rita@Harbor.example.com",
        "phone": "555-0142", "password": "a long enough secret", "currency": "usd", "hold_days": "7",
        "dispute_policy": "reverse", "active": "y", "fee_kind": "percent", "fee_basis_points": "12.5",
        "fee_base": "total", "fee_flat": "", "fee_minimum": "5.00", "fee_cap": "50.00",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def client_form(**overrides):
    data = {"name": "Bayside Rentals", "billing_emails": "ap@bayside.example.com", "phone": "555-0100",
            "address": "1 Bay Rd", "billing_mode": "invoice", "send_mode": "auto", "days_until_due": "30",
            "batching": "per_job", "currency": "usd", "reminder_offsets": "0, 7", "reminder_limit": "2"}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def text_of(response):
    return response.get_data(as_text=True)


# --- Partner setup ---------------------------------------------------------------------------------------

def test_office_creates_a_partner_with_a_login_and_a_fee_rule(db, login, office, app):
    browser = login(office)
    response = browser.post_form("/office/partners/new", partner_form())
    assert response.status_code == 302

    partner = db.session.scalars(db.select(Partner)).one()
    assert response.headers["Location"].endswith(f"/office/partners/{partner.id}")
    assert (partner.name, partner.contact_name, partner.email) == ("Harbor Realty", "Rita Realtor",
                                                                    "rita@harbor.example.com")
    assert partner.fee_kind == FeeKind.PERCENT and partner.fee_basis_points == 1250
    assert partner.fee_base == FeeBase.TOTAL
    assert (partner.fee_minimum, partner.fee_cap, partner.fee_flat) == (500, 5000, None)
    assert partner.hold_days == 7 and partner.dispute_policy == DisputePolicy.REVERSE
    assert partner.user.role == Role.PARTNER and partner.user.email == "rita@harbor.example.com"
    assert AuditEntry.query.filter_by(action="partner.created", entity_id=partner.id).count() == 1

    page = text_of(browser.get(response.headers["Location"]))
    assert "12.50 % of the total paid, min $5.00, cap $50.00" in page
    assert "7 days after the customer pays" in page and "Start onboarding" in page

    # The new login works, and lands on the partner portal.
    partner_browser = app.test_client()
    signed_in = partner_browser.post_form("/login", {"email": "rita@harbor.example.com",
                                                     "password": "a long enough secret"})
    assert signed_in.status_code == 302 and signed_in.headers["Location"].endswith("/partner")
    assert "Harbor Realty" in text_of(partner_browser.get("/partner"))


def test_bad_partner_input_gets_an_error_per_field_and_keeps_what_was_typed(db, login, office):
    factories.user("crew", email="taken@example.com")
    browser = login(office)
    response = browser.post_form("/office/partners/new", partner_form(
        email="taken@example.com", password="short", fee_basis_points="150", fee_minimum="60.00",
        fee_cap="10.00", hold_days="3"))
    assert response.status_code == 422
    page = text_of(response)
    assert "That email already has a login." in page
    assert "Passwords need at least 10 characters." in page
    assert "The percentage must be from 0 to 100." in page
    assert "The cap must be at least the minimum." in page
    # Nothing is lost: what was typed is still in the form.
    assert 'value="Harbor Realty"' in page and 'value="Rita Realtor"' in page and 'value="150"' in page
    assert 'value="60.00"' in page and 'value="3"' in page
    assert db.session.query(Partner).count() == 0
    assert db.session.query(User).filter_by(role=Role.PARTNER).count() == 0


def test_a_flat_fee_needs_its_amount_and_a_percentage_must_be_a_number(db, login, office):
    browser = login(office)
    page = text_of(browser.post_form("/office/partners/new", partner_form(fee_kind="flat", fee_flat="")))
    assert "Give the flat fee." in page
    response = browser.post_form("/office/partners/new", partner_form(fee_basis_points="ten"))
    assert response.status_code == 422
    assert "Enter a percentage like 10 or 12.5." in text_of(response)
    response = browser.post_form("/office/partners/new", partner_form(fee_flat="-5", fee_kind="flat"))
    assert "Amount must not be negative." in text_of(response)
    assert db.session.query(Partner).count() == 0


def test_office_edits_the_fee_rule_and_deactivating_stops_the_login(db, login, office, app):
    partner = factories.partner(name="Oak Property Co")
    browser = login(office)
    form = partner_form(name="Oak Property Co", email="desk@oak.example.com", password="", fee_kind="flat",
                        fee_basis_points="", fee_flat="40.00", fee_minimum="", fee_cap="", active=None)
    response = browser.post_form(f"/office/partners/{partner.id}/edit", form)
    assert response.status_code == 302
    db.session.refresh(partner)
    assert partner.fee_kind == FeeKind.FLAT and partner.fee_flat == 4000 and partner.fee_basis_points is None
    assert partner.active is False and partner.user.active is False
    assert partner.user.email == "desk@oak.example.com"  # the login follows the email
    changed = {entry.field for entry in AuditEntry.query.filter_by(action="partner.updated", entity_id=partner.id)}
    assert {"fee_kind", "fee_flat", "fee_basis_points", "active"} <= changed
    refused = app.test_client().post_form("/login", {"email": partner.user.email, "password": PASSWORD})
    assert refused.status_code != 302
    assert "$40.00 per paid job" in text_of(browser.get(f"/office/partners/{partner.id}"))


def test_a_new_password_from_the_office_signs_the_partner_out_everywhere(db, login, office, app):
    partner = factories.partner(name="Oak Property Co")
    partner_browser = login(partner.user)
    assert partner_browser.get("/partner").status_code == 200
    form = partner_form(name="Oak Property Co", email="desk@oak.example.com", password="a brand new secret")
    assert login(office).post_form(f"/office/partners/{partner.id}/edit", form).status_code == 302
    assert partner_browser.get("/partner").status_code == 302  # back to sign in
    assert AuditEntry.query.filter_by(action="partner.password_set", entity_id=partner.id).count() == 1
    signed_in = app.test_client().post_form("/login", {"email": "desk@oak.example.com",
                                                       "password": "a brand new secret"})
    assert signed_in.status_code == 302 and signed_in.headers["Location"].endswith("/partner")


# --- Attribution --------------------------------------------------------------------------------------------

def test_the_client_form_sets_and_ends_the_referring_partner(db, login, office):
    partner = factories.partner(name="Harbor Realty")
    browser = login(office)
    response = browser.post_form("/office/clients/new", client_form(
        referral_partner_id=str(partner.id), referral_starts_on="2026-03-01", referral_max_paid_jobs="3"))
    assert response.status_code == 302
    client = db.session.scalars(db.select(Client)).one()
    referral = db.session.scalars(db.select(Referral)).one()
    assert (referral.partner_id, referral.client_id, referral.job_id) == (partner.id, client.id, None)
    assert referral.starts_on == date(2026, 3, 1) and referral.max_paid_jobs == 3 and referral.ended_at is None
    assert AuditEntry.query.filter_by(action="referral.added", entity_id=referral.id).count() == 1
    assert "Harbor Realty" in text_of(browser.get(f"/office/clients/{client.id}"))

    edit_page = text_of(browser.get(f"/office/clients/{client.id}/edit"))
    assert f'<option selected value="{partner.id}">Harbor Realty</option>' in edit_page

    # Saving with the same referral changes nothing; "Nobody" ends it.
    same = client_form(referral_partner_id=str(partner.id), referral_starts_on="2026-03-01",
                       referral_max_paid_jobs="3")
    assert browser.post_form(f"/office/clients/{client.id}/edit", same).status_code == 302
    assert db.session.query(Referral).count() == 1 and referral.ended_at is None
    assert browser.post_form(f"/office/clients/{client.id}/edit",
                             client_form(referral_partner_id="0")).status_code == 302
    db.session.refresh(referral)
    assert referral.ended_at is not None
    assert AuditEntry.query.filter_by(action="referral.ended", entity_id=referral.id).count() == 1


def test_a_referral_ending_before_it_starts_is_refused_and_the_client_is_not_saved(db, login, office):
    partner = factories.partner()
    browser = login(office)
    response = browser.post_form("/office/clients/new", client_form(
        referral_partner_id=str(partner.id), referral_starts_on="2026-03-01", referral_ends_on="2026-02-01"))
    assert response.status_code == 422
    assert "The end date must not be before the start date." in text_of(response)
    assert db.session.query(Client).count() == 0 and db.session.query(Referral).count() == 0


def test_the_job_page_shows_and_sets_the_referring_partner(db, login, office):
    client_partner = factories.partner(name="Harbor Realty")
    job_partner = factories.partner(name="Summit Plumbing Supply")
    client = factories.client(name="Bayside Rentals")
    client_referral = factories.referral(client_partner, client_row=client)
    job = factories.job(client, items=[("Labor", "1", 8500)])
    browser = login(office)

    page = text_of(browser.get(f"/office/jobs/{job.id}"))
    assert re.search(r"Referred by <a [^>]+><strong>Harbor Realty</strong>", page)

    # A referral for this job alone beats the client's, and the component answers htmx with itself.
    response = browser.htmx("POST", f"/office/jobs/{job.id}/referral",
                            {"partner_id": str(job_partner.id), "starts_on": "2024-01-01", "fee_kind": "flat",
                             "fee_flat": "25.00", "fee_base": ""}, headers={"HX-Target": "job-referral"})
    assert response.status_code == 200
    component = text_of(response)
    assert component.lstrip().startswith('<section id="job-referral"')
    assert re.search(r"Referred by <a [^>]+><strong>Summit Plumbing Supply</strong>", component)
    assert "$25.00 per paid job" in component
    own = db.session.scalars(db.select(Referral).where(Referral.job_id == job.id)).one()
    assert own.partner_id == job_partner.id and own.fee_flat == 2500 and own.fee_kind == FeeKind.FLAT
    assert AuditEntry.query.filter_by(action="referral.added", job_id=job.id).count() == 1

    # Once billed, the job's partner is the one on its live billing record.
    record = BillingRecord(job=job, kind=RecordKind.INVOICE, status=BillingStatus.SENT, live=True, currency="usd",
                           subtotal=8500, total=8500, referral_id=client_referral.id)
    db.session.add(record)
    db.session.commit()
    page = text_of(browser.get(f"/office/jobs/{job.id}"))
    assert re.search(r"Referred by <a [^>]+><strong>Harbor Realty</strong>", page)
    assert "Fixed when the job was billed." in page


def test_a_second_partner_cannot_be_credited_for_an_already_referred_client(db, login, office):
    first = factories.partner(name="Harbor Realty")
    second = factories.partner(name="Oak Property Co")
    client = factories.client(name="Bayside Rentals")
    browser = login(office)
    response = browser.post_form(f"/office/partners/{first.id}/referrals",
                                 {"client_id": str(client.id), "starts_on": "2026-01-01", "max_paid_jobs": "2"})
    assert response.status_code == 303
    assert db.session.scalars(db.select(Referral)).one().max_paid_jobs == 2

    response = browser.post_form(f"/office/partners/{second.id}/referrals",
                                 {"client_id": str(client.id), "starts_on": "2026-06-01"})
    assert response.status_code == 422
    assert "Bayside Rentals is already referred by Harbor Realty from Jan 01, 2026" in text_of(response)
    assert db.session.query(Referral).count() == 1

    referral = db.session.scalars(db.select(Referral)).one()
    assert browser.post_form(f"/office/partners/{first.id}/referrals/{referral.id}/end").status_code == 303
    assert browser.post_form(f"/office/partners/{second.id}/referrals",
                             {"client_id": str(client.id), "starts_on": "2026-06-01"}).status_code == 303
    assert db.session.query(Referral).filter(Referral.ended_at.is_(None)).one().partner_id == second.id


def test_ending_another_partners_referral_through_this_partner_is_a_404(db, login, office):
    first, second = factories.partner(), factories.partner()
    referral = factories.referral(first)
    browser = login(office)
    assert browser.post_form(f"/office/partners/{second.id}/referrals/{referral.id}/end").status_code == 404
    db.session.refresh(referral)
    assert referral.ended_at is None


# --- The payouts ledger -----------------------------------------------------------------------------------

def noon(year, month, day):
    return datetime(year, month, day, 12, tzinfo=timezone.utc)


@pytest.fixture
def ledger(db):
    """Hand-made ledger rows: what each filter must add up to is written next to them."""
    harbor = factories.partner(name="Harbor Realty")
    oak = factories.partner(name="Oak Property Co")
    rows = {
        # Harbor, October: paid 1000 + (2000 − 500 reversed) + 0 (fully reversed) = 2500 paid.
        "paid": factories.payout(harbor, amount=1000, paid_on=noon(2026, 10, 5)),
        "partly_reversed": factories.payout(harbor, amount=2000, amount_reversed=500, paid_on=noon(2026, 10, 20)),
        "reversed": factories.payout(harbor, amount=700, amount_reversed=700, status="reversed",
                                     paid_on=noon(2026, 10, 25)),
        # Harbor, November: owed 300 + 400 + 250 + 150 = 1100; the cancelled one counts nowhere.
        "pending": factories.payout(harbor, amount=300, status="pending", paid_on=noon(2026, 11, 2)),
        "held": factories.payout(harbor, amount=400, status="held", paid_on=noon(2026, 11, 3)),
        "no_account": factories.payout(harbor, amount=250, status="held_no_account", paid_on=noon(2026, 11, 4)),
        "failed": factories.payout(harbor, amount=150, status="failed", paid_on=noon(2026, 11, 5),
                                   last_error="Stripe error 500: boom", attempts=4),
        "cancelled": factories.payout(harbor, amount=900, status="cancelled", paid_on=noon(2026, 11, 6)),
        # Oak: paid 5000, owed 600.
        "oak_paid": factories.payout(oak, amount=5000, amount_paid=50000, paid_on=noon(2026, 11, 10)),
        "oak_pending": factories.payout(oak, amount=600, status="pending", paid_on=noon(2026, 11, 11)),
    }
    return harbor, oak, rows


def totals_on(page):
    owed = re.search(r'<dd class="owed">([^<]+)</dd>', page).group(1)
    paid = re.search(r'<dd class="paid">([^<]+)</dd>', page).group(1)
    return owed, paid


def test_ledger_totals_and_filters_match_the_hand_computed_rows(db, login, office, ledger):
    harbor, oak, rows = ledger
    browser = login(office)

    page = text_of(browser.get("/office/payouts"))
    assert totals_on(page) == ("$17.00", "$75.00")
    assert all(f'id="ledger-row-{row.id}"' in page for row in rows.values())

    page = text_of(browser.get(f"/office/payouts?partner={oak.id}"))
    assert totals_on(page) == ("$6.00", "$50.00")
    assert f'id="ledger-row-{rows["oak_paid"].id}"' in page and f'id="ledger-row-{rows["paid"].id}"' not in page

    page = text_of(browser.get(f"/office/payouts?partner={harbor.id}&paid_from=2026-10-01&paid_to=2026-10-31"))
    assert totals_on(page) == ("$0.00", "$25.00")
    shown = set(re.findall(r'id="ledger-row-(\d+)"', page))
    assert shown == {str(rows[name].id) for name in ("paid", "partly_reversed", "reversed")}

    page = text_of(browser.get("/office/payouts?status=paid"))
    assert totals_on(page) == ("$0.00", "$75.00")
    page = text_of(browser.get("/office/payouts?status=held_no_account"))
    assert totals_on(page) == ("$2.50", "$0.00")

    # The same numbers straight from the SQL aggregate.
    [total] = ledger_totals(LedgerFilters(partner_id=harbor.id))
    assert (total.owed, total.paid, total.count) == (1100, 2500, 8)


def test_ledger_csv_follows_the_filters(db, login, office, ledger):
    harbor, oak, rows = ledger
    response = login(office).get(f"/office/payouts.csv?partner={oak.id}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    lines = text_of(response).strip().splitlines()
    assert lines[0] == "partner,paid_on,job_number,client,currency,fee_base_amount,fee,reversed,net,status"
    assert len(lines) == 3
    assert lines[1].startswith("Oak Property Co,2026-11-11,")
    assert lines[1].endswith(",USD,100.00,6.00,0.00,6.00,pending")
    assert lines[2].startswith("Oak Property Co,2026-11-10,")
    assert lines[2].endswith(",USD,500.00,50.00,0.00,50.00,paid")


def test_failures_and_waiting_payouts_need_attention(db, login, office, ledger):
    harbor, oak, rows = ledger
    page = text_of(login(office).get("/office/payouts?partner=%d&status=paid" % oak.id))
    failed = re.search(r'<li class="attention-item" id="payout-%d".*?</li>' % rows["failed"].id, page, re.S).group(0)
    assert "Stripe error 500: boom" in failed and ">Retry</button>" in failed
    waiting = re.search(r'<li class="attention-item" id="payout-%d".*?</li>' % rows["no_account"].id, page,
                        re.S).group(0)
    assert f"/office/partners/{harbor.id}#account" in waiting and "Retry" not in waiting


def test_retry_moves_a_failed_payout_out_of_failed_and_answers_with_its_component(db, login, office, ledger):
    harbor, oak, rows = ledger
    failed = rows["failed"]
    browser = login(office)
    response = browser.htmx("POST", f"/office/payouts/{failed.id}/retry", headers={"HX-Target": f"payout-{failed.id}"})
    assert response.status_code == 200
    component = text_of(response)
    assert component.lstrip().startswith(f'<li class="attention-item" id="payout-{failed.id}"')
    assert "Queued again." in component and ">Retry</button>" not in component
    db.session.refresh(failed)
    assert failed.status == PayoutStatus.PENDING
    assert AuditEntry.query.filter_by(action="referrals.payout_retry", entity_id=failed.id).count() == 1

    # A second press (another tab) is refused in the box, and changes nothing.
    again = text_of(browser.htmx("POST", f"/office/payouts/{failed.id}/retry",
                                 headers={"HX-Target": f"payout-{failed.id}"}))
    assert "Only a failed payout can be retried." in again
    assert AuditEntry.query.filter_by(action="referrals.payout_retry", entity_id=failed.id).count() == 1


# --- Onboarding, through the Stripe sandbox -------------------------------------------------------------------

@pytest.fixture
def sandbox_stripe(app, stripe_sandbox):
    saved = {key: app.config.get(key) for key in ("STRIPE_API_BASE", "STRIPE_SECRET_KEY", "PUBLIC_URL")}
    app.config.update(STRIPE_API_BASE=stripe_sandbox.url, STRIPE_SECRET_KEY=stripe_sandbox.api_key,
                      PUBLIC_URL="http://portal.test")
    app.extensions.pop("closeout_stripe", None)
    get_queue().empty()
    yield stripe_sandbox
    app.config.update(saved)
    app.extensions.pop("closeout_stripe", None)
    get_queue().empty()


def test_onboarding_sends_the_office_to_stripe_and_the_return_page_reads_the_account(db, login, office,
                                                                                   sandbox_stripe):
    partner = factories.partner(name="Harbor Realty")
    waiting = factories.payout(partner, amount=1200, status="held_no_account")
    browser = login(office)

    response = browser.post_form(f"/office/partners/{partner.id}/onboarding")
    assert response.status_code == 303
    onboarding_url = response.headers["Location"]
    assert onboarding_url.startswith(sandbox_stripe.url)
    db.session.refresh(partner)
    assert partner.stripe_account_id and partner.account_status == AccountStatus.ONBOARDING
    assert "Continue onboarding" in text_of(browser.get(f"/office/partners/{partner.id}"))

    # The partner completes Stripe's onboarding, and Stripe sends the browser back to the partner page.
    status, location = no_redirect_post(onboarding_url)
    assert status in (302, 303)
    assert location == f"http://portal.test/office/partners/{partner.id}"

    page = text_of(browser.get(f"/office/partners/{partner.id}"))
    assert "Ready for payouts" in page
    db.session.refresh(partner)
    db.session.refresh(waiting)
    assert partner.account_status == AccountStatus.READY
    assert waiting.status == PayoutStatus.PENDING  # released: its transfer is queued


def test_onboarding_with_stripe_down_says_so_and_stays_on_the_page(db, login, office, app):
    partner = factories.partner()
    saved = {key: app.config.get(key) for key in ("STRIPE_API_BASE", "STRIPE_SECRET_KEY")}
    app.config.update(STRIPE_API_BASE="http://127.0.0.1:9", STRIPE_SECRET_KEY="sk_test_x")
    app.extensions.pop("closeout_stripe", None)
    try:
        browser = login(office)
        response = browser.post_form(f"/office/partners/{partner.id}/onboarding")
        assert response.status_code == 303
        assert response.headers["Location"].endswith(f"/office/partners/{partner.id}")
        assert "Stripe could not be reached" in text_of(browser.get(response.headers["Location"]))
    finally:
        app.config.update(saved)
        app.extensions.pop("closeout_stripe", None)
    db.session.refresh(partner)
    assert partner.stripe_account_id is None and partner.account_status == AccountStatus.NONE


def test_the_office_navigation_links_partners_and_payouts(db, login, office):
    page = text_of(login(office).get("/office/partners"))
    assert 'href="/office/partners">Partners</a>' in page and 'href="/office/payouts">Payouts</a>' in page


def test_a_partner_sets_up_payouts_from_the_portal_and_lands_back_on_it(db, login, partner, sandbox_stripe):
    row = factories.partner(partner, name="Harbor Realty")
    waiting = factories.payout(row, amount=1200, status="held_no_account")
    browser = login(partner)
    assert "Set up payouts" in text_of(browser.get("/partner"))

    response = browser.post_form("/partner/payouts-account")
    assert response.status_code == 303
    onboarding_url = response.headers["Location"]
    assert onboarding_url.startswith(sandbox_stripe.url)

    _, location = no_redirect_post(onboarding_url)
    assert location == "http://portal.test/partner"  # back to the portal, not the office

    page = text_of(browser.get("/partner"))
    assert "Set up payouts" not in page and "Continue payout setup" not in page
    db.session.refresh(row)
    db.session.refresh(waiting)
    assert row.account_status == AccountStatus.READY
    assert waiting.status == PayoutStatus.PENDING  # released: its transfer is queued
