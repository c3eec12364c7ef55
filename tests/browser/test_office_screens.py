"""The office screens in a real browser at 375 px: htmx swaps, the site picker and inline line editing."""
import pytest

from tests import factories
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

# Checkboxes are 24 px, but each sits in a 44 px label that takes the tap.
TAP_TARGETS = ("main button, main a.button, main select, main textarea, main label.check, "
               "main input:not([type=hidden]):not([type=checkbox])")


@pytest.fixture
def office_phone(browser, live_server):
    """A 375 px wide touch screen, the width the office screens are designed at."""
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True,
                                  base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def sign_in(page, user):
    page.goto("/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/office/jobs")


def assert_phone_friendly(page):
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} is {overflow}px wider than the screen"
    small = page.eval_on_selector_all(TAP_TARGETS, """elements => elements
        .filter(element => element.offsetParent !== null)
        .map(element => [element.outerHTML.slice(0, 80), element.getBoundingClientRect().height])
        .filter(([, height]) => height < 44)""")
    assert small == [], f"controls under 44 px on {page.url}"


def test_office_filters_schedules_and_edits_lines_on_a_phone(db, office_phone, office, crew):
    acme = factories.client(name="Acme Rentals")
    factories.site(acme, name="Unit 4B", address="4 Elm St")
    beta = factories.client(name="Beta Homes")
    factories.site(beta, name="Warehouse", address="9 Dock Rd")
    factories.job(acme, crew=[crew], scope="Fix the faucet", items=[("Labor", "2", 8500)])
    factories.job(beta, scope="Paint the fence")
    factories.template(name="Trip charge", unit_amount=4500, unit="each")
    page = office_phone

    sign_in(page, office)
    assert page.locator(".job-row").count() == 2
    assert_phone_friendly(page)

    # Typing filters only the results, and the address bar keeps a URL to share.
    page.fill("input[name=q]", "fence")
    page.wait_for_url("**/office/jobs?q=fence*")
    page.wait_for_function("() => document.querySelectorAll('.job-row').length === 1")
    assert "Beta Homes" in page.locator("#job-results").inner_text()
    assert page.input_value("input[name=q]") == "fence"  # the form itself was not swapped away

    # Choosing a client swaps in that client's sites.
    page.goto("/office/jobs/new")
    page.select_option("select[name=client_id]", label="Beta Homes")
    page.wait_for_function("() => document.querySelector('#site_id').textContent.includes('Warehouse')")
    assert "Unit 4B" not in page.locator("#site_id").inner_text()
    page.select_option("#site_id", label="Warehouse · 9 Dock Rd")
    page.fill("textarea[name=scope]", "Replace the dock light")
    page.fill("input[name=scheduled_start]", "2025-07-01T09:00")
    page.check(f"input[name=crew][value='{crew.id}']")
    assert_phone_friendly(page)
    page.click("main button:has-text('Schedule job')")
    page.wait_for_url("**/office/jobs/3")
    assert "Warehouse" in page.inner_text("main") and "Casey Crew" in page.inner_text("main")

    # Lines are edited in place: the component swaps itself, totals included.
    page.goto("/office/jobs/1")
    assert_phone_friendly(page)
    page.click("#line-items a:has-text('Edit')")
    page.fill("#line-items tr.editing input[name=quantity]", "3")
    page.click("#line-items tr.editing button:has-text('Save line')")
    page.wait_for_function("() => document.querySelector('#line-items tfoot').textContent.includes('$255.00')")
    page.select_option("#line-items .add-line select[name=template_id]", label="Trip charge · $45.00/each")
    page.click("#line-items .add-line button:has-text('Add line')")
    page.wait_for_function("() => document.querySelector('#line-items tfoot').textContent.includes('$300.00')")
    # A refusal shows in the component instead of vanishing (htmx drops 4xx answers).
    page.fill("#line-items .add-line input[name=quantity]", "0")
    page.click("#line-items .add-line button:has-text('Add line')")
    page.wait_for_selector("#line-items .flash-error")
    assert "quantity must be greater than zero" in page.inner_text("#line-items")
    assert_phone_friendly(page)
    assert page.errors == []
