"""Customers, products, prices, tax rates, invoice items and invoices, through the official SDK."""

import io
from decimal import Decimal

import pypdf
import pytest
import stripe

from tests.sandbox.scenarios import NO_PROXY, event_types, http_get, http_post_form, new_customer, open_invoice

DAY = 24 * 60 * 60


def test_customer_create_retrieve_update_and_list_by_email(stripe_sandbox):
    client = stripe_sandbox.client()
    pat = new_customer(client, metadata={"client_id": "7"})
    new_customer(client, email="someone.else@example.com")

    assert pat.id.startswith("cus_")
    assert pat.object == "customer" and pat.livemode is False
    assert client.v1.customers.retrieve(pat.id).metadata.to_dict() == {"client_id": "7"}

    updated = client.v1.customers.update(pat.id, params={"name": "Pat J.", "metadata": {"client_id": ""}})
    assert updated.name == "Pat J."
    assert updated.metadata.to_dict() == {}

    found = client.v1.customers.list(params={"email": "pat@example.com"})
    assert [customer.id for customer in found.data] == [pat.id]
    assert found.object == "list" and found.has_more is False and found.url == "/v1/customers"
    assert event_types(client, type="customer.*") == ["customer.updated", "customer.created", "customer.created"]


def test_unknown_customer_is_resource_missing(stripe_sandbox):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_sandbox.client().v1.customers.retrieve("cus_nope")
    assert refused.value.http_status == 404
    assert refused.value.code == "resource_missing"


def test_product_and_price(stripe_sandbox):
    client = stripe_sandbox.client()
    product = client.v1.products.create(params={"name": "Window washing", "metadata": {"sku": "ww"}})
    price = client.v1.prices.create(params={"product": product.id, "currency": "usd", "unit_amount": 12500})
    inline = client.v1.prices.create(params={"currency": "usd", "unit_amount_decimal": "99.5",
                                             "product_data": {"name": "Half cent"}})

    assert product.id.startswith("prod_") and price.id.startswith("price_")
    assert client.v1.prices.retrieve(price.id).unit_amount == 12500
    assert price.type == "one_time" and price.product == product.id
    assert inline.unit_amount is None and inline.unit_amount_decimal == Decimal("99.5")
    assert client.v1.products.retrieve(inline.product).name == "Half cent"


def test_invoice_item_with_price_data_and_with_amount(stripe_sandbox):
    client = stripe_sandbox.client()
    customer = new_customer(client)
    product = client.v1.products.create(params={"name": "Pressure washing"})
    priced = client.v1.invoice_items.create(params={
        "customer": customer.id,
        "price_data": {"currency": "usd", "product": product.id, "unit_amount": 1250},
        "quantity": 3,
        "description": "Driveway",
        "metadata": {"line": "1"},
    })
    flat = client.v1.invoice_items.create(params={"customer": customer.id, "amount": 700, "currency": "usd",
                                                  "description": "Trip fee"})
    decimal = client.v1.invoice_items.create(params={"customer": customer.id, "unit_amount_decimal": "333.5",
                                                     "quantity": 3, "currency": "usd"})

    assert priced.id.startswith("ii_") and priced.amount == 3750 and priced.quantity == 3
    assert priced.pricing.price_details.product == product.id
    assert flat.amount == 700 and flat.invoice is None
    assert decimal.amount == 1001  # 1000.5 rounds half up
    pending = client.v1.invoice_items.list(params={"customer": customer.id, "pending": True})
    assert {item.id for item in pending.data} == {priced.id, flat.id, decimal.id}


def test_invoice_item_needs_a_customer(stripe_sandbox):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_sandbox.client().v1.invoice_items.create(params={"amount": 100, "currency": "usd"})
    assert refused.value.param == "customer"
    assert refused.value.code == "parameter_missing"


def test_invoice_lifecycle_create_items_finalize_send_pay_out_of_band(stripe_sandbox):
    client = stripe_sandbox.client()
    customer = new_customer(client)
    draft = client.v1.invoices.create(params={
        "customer": customer.id,
        "collection_method": "send_invoice",
        "days_until_due": 14,
        "auto_advance": False,
        "description": "Job 42 at 12 Elm St",
        "footer": "Thank you for your business",
        "custom_fields": [{"name": "Job", "value": "42"}],
        "metadata": {"job_id": "42"},
        "pending_invoice_items_behavior": "exclude",
    })
    assert draft.status == "draft" and draft.number is None and draft.hosted_invoice_url is None
    product = client.v1.products.create(params={"name": "Gutters"})
    client.v1.invoice_items.create(params={"customer": customer.id, "invoice": draft.id, "quantity": 2,
                                           "price_data": {"currency": "usd", "product": product.id,
                                                          "unit_amount": 4000}})

    invoice = client.v1.invoices.finalize_invoice(draft.id)
    assert invoice.status == "open"
    assert invoice.number.endswith("-0001")
    assert invoice.due_date == invoice.status_transitions.finalized_at + 14 * DAY
    assert invoice.amount_due == 8000 and invoice.total == 8000
    assert invoice.lines.data[0].amount == 8000
    assert invoice.hosted_invoice_url == f"{stripe_sandbox.url}/invoices/{invoice.id}"
    assert invoice.invoice_pdf == f"{stripe_sandbox.url}/invoices/{invoice.id}/pdf"
    assert invoice.custom_fields[0].value == "42" and invoice.footer == "Thank you for your business"

    client.v1.invoices.send_invoice(invoice.id)
    paid = client.v1.invoices.pay(invoice.id, params={"paid_out_of_band": True})
    assert paid.status == "paid" and paid.amount_paid == 8000 and paid.amount_remaining == 0
    assert client.v1.invoice_payments.list(params={"invoice": invoice.id}).data == []
    assert event_types(client, type="invoice.*") == [
        "invoice.paid", "invoice.sent", "invoice.finalized", "invoice.created"]


def test_finalized_invoice_refuses_new_items_and_refinalizing(stripe_sandbox):
    client = stripe_sandbox.client()
    invoice = open_invoice(client)
    with pytest.raises(stripe.InvalidRequestError) as new_item:
        client.v1.invoice_items.create(params={"customer": invoice.customer, "invoice": invoice.id,
                                               "amount": 100, "currency": "usd"})
    assert new_item.value.code == "invoice_not_editable"
    with pytest.raises(stripe.InvalidRequestError) as refinalize:
        client.v1.invoices.finalize_invoice(invoice.id)
    assert "already finalized" in refinalize.value.user_message


def test_void_and_mark_uncollectible(stripe_sandbox):
    client = stripe_sandbox.client()
    voided = client.v1.invoices.void_invoice(open_invoice(client).id)
    written_off = client.v1.invoices.mark_uncollectible(open_invoice(client).id)

    assert voided.status == "void" and voided.status_transitions.voided_at
    assert written_off.status == "uncollectible"
    assert client.v1.invoices.list(params={"status": "void"}).data[0].id == voided.id
    assert {"invoice.voided", "invoice.marked_uncollectible"} <= set(event_types(client))


def test_tax_rates_apply_per_line_rounded_half_up(stripe_sandbox):
    client = stripe_sandbox.client()
    vat = client.v1.tax_rates.create(params={"display_name": "Sales tax", "percentage": 8.25, "inclusive": False,
                                             "jurisdiction": "CA"})
    assert vat.id.startswith("txr_") and client.v1.tax_rates.retrieve(vat.id).percentage == 8.25

    invoice = open_invoice(client, lines=((1999, 3, "Windows"), (1010, 1, "Screens")), tax_rates=[vat])

    # 5997 × 8.25% = 494.75 → 495; 1010 × 8.25% = 83.325 → 83.
    assert [line.taxes[0].amount for line in invoice.lines.data] == [495, 83]
    assert invoice.subtotal == 7007
    assert invoice.total_taxes[0].amount == 578 and invoice.total_taxes[0].tax_rate_details.tax_rate == vat.id
    assert invoice.total == invoice.amount_due == 7585
    assert invoice.total_excluding_tax == 7007


def test_paying_on_the_hosted_invoice_page_marks_the_invoice_paid(stripe_sandbox):
    client = stripe_sandbox.client()
    invoice = open_invoice(client, lines=((12345, 1, "Roof inspection"),))

    status, page = http_get(invoice.hosted_invoice_url)
    assert status == 200 and "$123.45" in page and "Roof inspection" in page and "Decline" in page

    status, final_url, page = http_post_form(f"{invoice.hosted_invoice_url}/pay", {"outcome": "card"})
    assert status == 200 and final_url.startswith(invoice.hosted_invoice_url)
    assert 'id="invoice-status">paid<' in page

    paid = client.v1.invoices.retrieve(invoice.id)
    assert paid.status == "paid" and paid.amount_paid == 12345
    payment = client.v1.invoice_payments.list(
        params={"invoice": invoice.id, "expand": ["data.payment.payment_intent"]}).data[0]
    assert payment.status == "paid"
    assert payment.payment.payment_intent.status == "succeeded"
    assert client.v1.charges.retrieve(payment.payment.payment_intent.latest_charge).paid is True
    assert {"invoice.paid", "payment_intent.succeeded", "charge.succeeded"} <= set(event_types(client))


def test_declined_then_bank_debit_that_settles(stripe_sandbox):
    client = stripe_sandbox.client()
    invoice = open_invoice(client)

    declined = stripe_sandbox.control("POST", f"invoices/{invoice.id}/pay", {"outcome": "card_declined"})
    assert declined["status"] == "open" and declined["attempt_count"] == 1
    assert event_types(client, types=["invoice.payment_failed", "payment_intent.payment_failed"]) == [
        "invoice.payment_failed", "payment_intent.payment_failed"]

    stripe_sandbox.control("POST", f"invoices/{invoice.id}/pay", {"outcome": "bank_debit"})
    payment = client.v1.invoice_payments.list(params={"invoice": invoice.id}).data[0]
    intent = client.v1.payment_intents.retrieve(payment.payment.payment_intent)
    assert intent.status == "processing"
    assert client.v1.invoices.retrieve(invoice.id).status == "open"

    stripe_sandbox.control("POST", f"payment_intents/{intent.id}/settle", {"outcome": "succeeded"})
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"


def test_bank_debit_that_fails_reports_payment_failed(stripe_sandbox):
    client = stripe_sandbox.client()
    invoice = open_invoice(client)
    stripe_sandbox.control("POST", f"invoices/{invoice.id}/pay", {"outcome": "bank_debit"})
    intent_id = client.v1.invoice_payments.list(params={"invoice": invoice.id}).data[0].payment.payment_intent

    stripe_sandbox.control("POST", f"payment_intents/{intent_id}/settle", {"outcome": "failed"})

    assert client.v1.payment_intents.retrieve(intent_id).status == "requires_payment_method"
    assert client.v1.invoices.retrieve(invoice.id).status == "open"
    assert event_types(client, type="invoice.payment_failed")


def test_clock_advance_reports_overdue_once(stripe_sandbox):
    client = stripe_sandbox.client()
    invoice = open_invoice(client, days_until_due=7)

    stripe_sandbox.control("POST", "clock/advance", {"seconds": 6 * DAY})
    assert "invoice.overdue" not in event_types(client)
    stripe_sandbox.control("POST", "clock/advance", {"seconds": 2 * DAY})
    stripe_sandbox.control("POST", "clock/advance", {"seconds": 2 * DAY})

    overdue = client.v1.events.list(params={"type": "invoice.overdue"}).data
    assert [event.data.object.id for event in overdue] == [invoice.id]
    assert stripe_sandbox.control("GET", "clock")["offset_seconds"] == 10 * DAY


def test_invoice_pdf_is_a_pdf_with_the_total(stripe_sandbox):
    invoice = open_invoice(stripe_sandbox.client(), lines=((4321, 1, "Chimney sweep"),))
    with NO_PROXY.open(invoice.invoice_pdf, timeout=10) as response:
        assert response.headers["Content-Type"] == "application/pdf"
        body = response.read()
    text = pypdf.PdfReader(io.BytesIO(body)).pages[0].extract_text()
    assert invoice.number in text and "$43.21" in text and "Chimney sweep" in text


def test_a_zero_amount_invoice_is_paid_when_finalized(stripe_sandbox):
    client = stripe_sandbox.client()
    draft = client.v1.invoices.create(params={"customer": new_customer(client).id,
                                              "collection_method": "send_invoice", "days_until_due": 7})
    assert client.v1.invoices.finalize_invoice(draft.id).status == "paid"
