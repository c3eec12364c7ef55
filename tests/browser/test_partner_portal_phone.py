"""A referral partner checks their earnings on a phone (390×844): totals, months, a paid job, the CSV link."""
from datetime import datetime, timezone

import pytest

from tests import factories

pytestmark = pytest.mark.browser

TAP_TARGETS = ("main button, main a.button, main a.portal-job, main .back a, .topnav a, .topnav button")


def small_targets(page):
    """Visible controls shorter than 44 px: too small for a thumb."""
    return page.eval_on_selector_all(TAP_TARGETS, """elements => elements
        .filter(element => element.offsetParent !== null)
        .map(element => [element.outerHTML.slice(0, 80), element.getBoundingClientRect().height])
        .filter(([, height]) => height < 44)""")


def assert_fits_the_screen(page):
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} is {overflow}px wider than the 390px screen"


def test_a_partner_reads_their_earnings_on_a_phone(db, phone, partner, artifact_path):
    harbor = factories.partner(partner, name="Harbor Realty Property Management Group")
    client_row = factories.client(name="Bayside Rentals and Long Name Holdings LLC")
    referral = factories.referral(harbor, client_row=client_row)
    paid = factories.payout(harbor, amount=12345, amount_paid=123450, referral_row=referral,
                            paid_on=datetime(2026, 10, 5, 12, tzinfo=timezone.utc))
    factories.payout(harbor, amount=2500, status="held", referral_row=referral,
                     paid_on=datetime(2026, 11, 3, 12, tzinfo=timezone.utc))
    page = phone

    page.goto("/login")
    page.get_by_label("Email").fill(partner.email)
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/partner")
    page.get_by_role("heading", name="Month by month").wait_for()
    assert page.locator("dd.paid").inner_text() == "$123.45"
    assert page.locator("dd.held").inner_text() == "$25.00"
    assert page.get_by_text("October 2026").is_visible() and page.get_by_text("November 2026").is_visible()
    assert page.get_by_role("link", name="Download CSV").is_visible()
    assert_fits_the_screen(page)
    assert small_targets(page) == []
    page.screenshot(path=str(artifact_path("partner-portal.png")), full_page=True)

    page.locator(f"a.portal-job:has-text('{paid.job.number}')").click()
    page.get_by_role("heading", name=f"Job {paid.job.number}").wait_for()
    assert page.get_by_text("$1,234.50").is_visible()  # the amount the fee is based on
    assert_fits_the_screen(page)
    assert small_targets(page) == []
    page.get_by_role("link", name="← Your referrals").click()
    page.wait_for_url("**/partner")
    assert page.errors == []
