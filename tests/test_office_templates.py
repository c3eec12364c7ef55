"""Office: the price list of line-item templates."""
from portal.audit.models import AuditEntry
from portal.jobs.models import LineItemTemplate
from portal.jobs.services import active_templates, add_line_item
from tests import factories


def template_form(**overrides):
    data = {"name": "Labor", "description": "Per hour on site", "unit": "hour", "unit_amount": "85.00",
            "currency": "usd", "taxable": "y"}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_a_price_typed_in_dollars_is_stored_in_cents(db, login, office):
    browser = login(office)
    response = browser.post_form("/office/templates/new", template_form(unit_amount="1,250.50"))
    assert response.status_code == 302
    template = db.session.scalars(db.select(LineItemTemplate)).one()
    assert (template.name, template.unit_amount, template.unit, template.taxable) == ("Labor", 125050, "hour", True)
    page = browser.get("/office/templates").get_data(as_text=True)
    assert "$1,250.50 / hour" in page
    assert AuditEntry.query.filter_by(action="line_item_template.created", entity_id=template.id).count() == 1


def test_a_bad_price_is_refused_and_nothing_is_saved(db, login, office):
    browser = login(office)
    for price, reason in (("12.345", "fractions of a cent"), ("abc", "like 85.00"), ("-5", "negative"), ("", "")):
        response = browser.post_form("/office/templates/new", template_form(unit_amount=price))
        assert response.status_code == 422
        assert reason in response.get_data(as_text=True)
    assert db.session.query(LineItemTemplate).count() == 0


def test_editing_a_price_leaves_lines_already_on_jobs_alone(db, login, office):
    template = factories.template(name="Labor", unit_amount=8500)
    job = factories.job()
    add_line_item(job, by=factories.system(), template=template, quantity="1")
    db.session.commit()
    browser = login(office)
    form = browser.get(f"/office/templates/{template.id}/edit").get_data(as_text=True)
    assert 'value="85.00"' in form
    response = browser.post_form(f"/office/templates/{template.id}/edit", template_form(unit_amount="95"))
    assert response.status_code == 302
    db.session.expire_all()
    assert template.unit_amount == 9500 and job.line_items[0].unit_amount == 8500
    entry = AuditEntry.query.filter_by(action="line_item_template.updated", field="unit_amount").one()
    assert (entry.old_value, entry.new_value) == ("8500", "9500")


def test_retiring_hides_a_template_from_the_pickers_and_restoring_brings_it_back(db, login, office):
    labor = factories.template(name="Labor")
    factories.template(name="Trip charge", unit_amount=4500, unit="each")
    job = factories.job()
    browser = login(office)

    response = browser.post_form(f"/office/templates/{labor.id}/retire")
    assert response.status_code == 302
    assert [template.name for template in active_templates("usd")] == ["Trip charge"]
    page = browser.get("/office/templates").get_data(as_text=True)
    assert "Retired" in page and f"/office/templates/{labor.id}/restore" in page
    job_page = browser.get(f"/office/jobs/{job.id}").get_data(as_text=True)
    assert "Trip charge ·" in job_page and "Labor ·" not in job_page
    # A retired template cannot be added by id either.
    response = browser.htmx("POST", f"/office/jobs/{job.id}/items", {"template_id": str(labor.id), "quantity": "1"},
                            headers={"HX-Target": "line-items"})
    assert "Not a valid choice" in response.get_data(as_text=True)
    db.session.expire_all()
    assert job.line_items == []

    assert browser.post_form(f"/office/templates/{labor.id}/retire").status_code == 302  # already retired: a message
    assert browser.post_form(f"/office/templates/{labor.id}/restore").status_code == 302
    assert [template.name for template in active_templates("usd")] == ["Labor", "Trip charge"]
    entries = AuditEntry.query.filter_by(entity_type="line_item_template", entity_id=labor.id).order_by(AuditEntry.id)
    actions = [entry.action for entry in entries]
    assert actions == ["line_item_template.retired", "line_item_template.restored"]
