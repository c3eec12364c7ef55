"""Office: clients with their billing policy, and their sites."""
from portal.audit.models import AuditEntry
from portal.clients.models import Batching, BillingMode, Client, SendMode, Site
from tests import factories


def client_form(**overrides):
    data = {
        "name": "Acme Property Management",
        "billing_emails": "ap@acme.example.com,\n Billing@Acme.example.com",
        "phone": "555-0199",
        "address": "1 Acme Way\nSpringfield",
        "billing_mode": "payment_link",
        "send_mode": "auto",
        "days_until_due": "15",
        "batching": "monthly",
        "currency": "cad",
        "allow_no_charge": "y",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def audit_fields(entity_type, entity_id):
    return {
        entry.field: (entry.old_value, entry.new_value)
        for entry in AuditEntry.query.filter_by(entity_type=entity_type, entity_id=entity_id,
                                                action=f"{entity_type}.updated")
    }


def test_office_creates_a_client_with_its_billing_policy(db, login, office):
    browser = login(office)
    response = browser.post_form("/office/clients/new", client_form())
    assert response.status_code == 302

    client = db.session.scalars(db.select(Client)).one()
    assert response.headers["Location"].endswith(f"/office/clients/{client.id}")
    assert client.billing_emails == ["ap@acme.example.com", "Billing@acme.example.com"]
    assert client.billing_mode == BillingMode.PAYMENT_LINK
    assert client.send_mode == SendMode.AUTO
    assert client.days_until_due == 15
    assert client.batching == Batching.MONTHLY
    assert client.currency == "cad"
    assert client.allow_no_charge is True and client.tax_exempt is False
    assert AuditEntry.query.filter_by(action="client.created", entity_id=client.id).count() == 1

    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "Acme Property Management" in page
    assert "Payment link" in page and "Send automatically" in page and "15 days" in page
    assert "Monthly" in page and "CAD" in page


def test_a_bad_billing_email_is_refused_and_nothing_is_saved(db, login, office):
    browser = login(office)
    response = browser.post_form("/office/clients/new", client_form(billing_emails="ap@acme.example.com, not-an-email"))
    assert response.status_code == 422
    assert "Not a valid email address: not-an-email" in response.get_data(as_text=True)
    assert db.session.query(Client).count() == 0

    client = factories.client(name="Beta Rentals", billing_emails=["ap@beta.example.com"])
    response = browser.post_form(f"/office/clients/{client.id}/edit",
                                 client_form(name="Renamed", billing_emails="ap@beta.example.com\nbroken@"))
    assert response.status_code == 422
    assert "broken@" in response.get_data(as_text=True)
    db.session.expire_all()
    assert client.name == "Beta Rentals"
    assert client.billing_emails == ["ap@beta.example.com"]
    assert audit_fields("client", client.id) == {}


def test_no_billing_email_and_out_of_range_due_days_are_refused(db, login, office):
    browser = login(office)
    assert browser.post_form("/office/clients/new", client_form(billing_emails=" , ")).status_code == 422
    response = browser.post_form("/office/clients/new", client_form(days_until_due="400"))
    assert response.status_code == 422
    assert "between 0 and 365" in response.get_data(as_text=True)
    assert db.session.query(Client).count() == 0


def test_editing_a_client_audits_each_changed_field_and_keeps_the_stripe_id(db, login, office):
    client = factories.client(name="Gamma Homes", stripe_customer_id="cus_Gamma123",
                              billing_emails=["ap@gamma.example.com", "owner@gamma.example.com"])
    browser = login(office)
    form_page = browser.get(f"/office/clients/{client.id}/edit").get_data(as_text=True)
    assert "cus_Gamma123" in form_page and 'name="stripe_customer_id"' not in form_page
    assert "ap@gamma.example.com\nowner@gamma.example.com</textarea>" in form_page

    response = browser.post_form(f"/office/clients/{client.id}/edit", client_form(
        name="Gamma Homes", billing_emails="ap@gamma.example.com, owner@gamma.example.com", phone="555-0100",
        address=client.address,
        billing_mode="invoice", send_mode="draft", days_until_due="45", batching="weekly", currency="usd",
        allow_no_charge=None, tax_exempt="y", stripe_customer_id="cus_Hijacked"))
    assert response.status_code == 302

    db.session.expire_all()
    assert client.days_until_due == 45 and client.batching == Batching.WEEKLY and client.tax_exempt is True
    assert client.stripe_customer_id == "cus_Gamma123"
    assert audit_fields("client", client.id) == {
        "days_until_due": ("30", "45"), "batching": ("per_job", "weekly"), "tax_exempt": ("False", "True"),
    }


def test_client_list_searches_by_name(db, login, office):
    factories.client(name="Acme Property Management")
    factories.client(name="Beta Rentals")
    browser = login(office)

    page = browser.get("/office/clients?q=acme").get_data(as_text=True)
    assert "Acme Property Management" in page and "Beta Rentals" not in page
    # A LIKE wildcard typed by a person is searched for literally.
    page = browser.get("/office/clients?q=%25").get_data(as_text=True)
    assert "Acme Property Management" not in page and "No clients" in page


def test_sites_are_added_and_edited_under_their_client(db, login, office):
    client = factories.client(name="Delta Estates")
    browser = login(office)
    response = browser.post_form(f"/office/clients/{client.id}/sites/new",
                                 {"name": "Unit 4B", "address": "4 Elm St #4B", "access_notes": "Key box 1234"})
    assert response.status_code == 302
    site = db.session.scalars(db.select(Site)).one()
    assert site.client_id == client.id

    page = browser.get(f"/office/clients/{client.id}").get_data(as_text=True)
    assert "Unit 4B" in page and "4 Elm St #4B" in page and "Key box 1234" in page

    response = browser.post_form(f"/office/clients/{client.id}/sites/{site.id}/edit",
                                 {"name": "Unit 4B", "address": "4 Elm Street #4B", "access_notes": ""})
    assert response.status_code == 302
    db.session.expire_all()
    assert site.address == "4 Elm Street #4B" and site.access_notes == ""
    assert audit_fields("site", site.id) == {"address": ("4 Elm St #4B", "4 Elm Street #4B"),
                                             "access_notes": ("Key box 1234", "")}

    assert browser.post_form(f"/office/clients/{client.id}/sites/new", {"name": "", "address": ""}).status_code == 422
    assert db.session.query(Site).count() == 1


def test_a_site_is_only_reachable_under_its_own_client(db, login, office):
    mine, other = factories.client(), factories.client()
    other_site = factories.site(other)
    browser = login(office)
    assert browser.get(f"/office/clients/{mine.id}/sites/{other_site.id}/edit").status_code == 404
    assert browser.post_form(f"/office/clients/{mine.id}/sites/{other_site.id}/edit",
                             {"name": "Taken", "address": "x"}).status_code == 404
    db.session.expire_all()
    assert other_site.name != "Taken"


def test_client_page_lists_its_recent_jobs(db, login, office):
    client = factories.client(name="Echo Co")
    job = factories.job(client, items=[("Labor", "2", 8500)], scope="Fix the gate")
    factories.job(factories.client(name="Someone Else"), scope="Not theirs")
    page = login(office).get(f"/office/clients/{client.id}").get_data(as_text=True)
    assert job.number in page and "$170.00" in page
    assert "J-00002" not in page
