"""Payment links, checkout sessions, PaymentIntents, charges, refunds and disputes."""

import pytest
import stripe

from tests.fixtures.stripe_sandbox import SandboxControlError
from tests.sandbox.scenarios import event_types, http_get, http_post_form, paid_charge, payment_link


def test_payment_link_create_retrieve_and_deactivate(stripe_sandbox):
    client = stripe_sandbox.client()
    link = payment_link(client, (2500, 1000), after_completion={
        "type": "hosted_confirmation", "hosted_confirmation": {"custom_message": "Thanks, see you next spring"}})

    assert link.id.startswith("plink_") and link.active is True
    assert link.url == f"{stripe_sandbox.url}/pay/{link.id}"
    assert link.metadata.to_dict() == {"job_id": "42"}
    assert link.payment_intent_data.metadata.to_dict() == {"job_id": "42"}
    fetched = client.v1.payment_links.retrieve(link.id, params={"expand": ["line_items"]})
    assert [item.amount_total for item in fetched.line_items.data] == [2500, 1000]
    assert client.v1.payment_links.line_items.list(link.id).data[0].price.unit_amount == 2500

    deactivated = client.v1.payment_links.update(link.id, params={"active": False})
    assert deactivated.active is False
    with pytest.raises(SandboxControlError, match="no longer active"):
        stripe_sandbox.control("POST", f"payment_links/{link.id}/pay", {"outcome": "card"})


def test_payment_link_refuses_more_than_20_lines(stripe_sandbox):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        payment_link(stripe_sandbox.client(), [100] * 21)
    assert refused.value.param == "line_items"
    assert "at most 20" in refused.value.user_message


def test_card_payment_completes_the_session_and_lists_it_by_link(stripe_sandbox):
    client = stripe_sandbox.client()
    link = payment_link(client, (4000, 1500))
    session = stripe_sandbox.control("POST", f"payment_links/{link.id}/pay", {"outcome": "card"})

    sessions = client.v1.checkout.sessions.list(params={"payment_link": link.id})
    assert [found.id for found in sessions.data] == [session["id"]]
    completed = client.v1.checkout.sessions.retrieve(session["id"], params={"expand": ["payment_intent"]})
    assert completed.id.startswith("cs_test_")
    assert completed.status == "complete" and completed.payment_status == "paid"
    assert completed.amount_total == 5500 and completed.payment_link == link.id
    assert completed.metadata.to_dict() == {"job_id": "42"}
    intent = completed.payment_intent
    assert intent.status == "succeeded" and intent.metadata.to_dict() == {"job_id": "42"}
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert charge.paid is True and charge.amount == 5500 and charge.payment_intent == intent.id
    assert {"checkout.session.completed", "payment_intent.succeeded", "charge.succeeded"} <= set(event_types(client))


def test_declined_card_fails_the_intent_and_completes_nothing(stripe_sandbox):
    client = stripe_sandbox.client()
    link = payment_link(client)
    session = stripe_sandbox.control("POST", f"payment_links/{link.id}/pay", {"outcome": "card_declined"})

    assert session["status"] == "open" and session["payment_status"] == "unpaid"
    intent = client.v1.payment_intents.retrieve(session["payment_intent"])
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error.code == "card_declined"
    types = event_types(client)
    assert "payment_intent.payment_failed" in types and "checkout.session.completed" not in types


@pytest.mark.parametrize("settlement, session_event, intent_status", [
    ("succeeded", "checkout.session.async_payment_succeeded", "succeeded"),
    ("failed", "checkout.session.async_payment_failed", "requires_payment_method"),
])
def test_bank_debit_completes_unpaid_then_settles(stripe_sandbox, settlement, session_event, intent_status):
    client = stripe_sandbox.client()
    link = payment_link(client)
    session = stripe_sandbox.control("POST", f"payment_links/{link.id}/pay", {"outcome": "bank_debit"})
    assert session["status"] == "complete" and session["payment_status"] == "unpaid"
    assert client.v1.payment_intents.retrieve(session["payment_intent"]).status == "processing"
    assert event_types(client, type="payment_intent.processing")

    stripe_sandbox.control("POST", f"payment_intents/{session['payment_intent']}/settle", {"outcome": settlement})

    assert client.v1.payment_intents.retrieve(session["payment_intent"]).status == intent_status
    settled = client.v1.checkout.sessions.retrieve(session["id"])
    assert settled.payment_status == ("paid" if settlement == "succeeded" else "unpaid")
    assert event_types(client)[0] == session_event


def test_paying_on_the_payment_link_page_shows_the_confirmation(stripe_sandbox):
    client = stripe_sandbox.client()
    link = payment_link(client, (7777,), after_completion={
        "type": "hosted_confirmation", "hosted_confirmation": {"custom_message": "Thanks from Closeout"}})

    status, page = http_get(link.url)
    assert status == 200 and "$77.77" in page and "Line 1" in page
    status, _, page = http_post_form(link.url, {"outcome": "card"})
    assert status == 200 and "Thanks from Closeout" in page
    assert client.v1.checkout.sessions.list(params={"payment_link": link.id}).data[0].payment_status == "paid"


def test_full_and_partial_refunds(stripe_sandbox):
    client = stripe_sandbox.client()
    charge = paid_charge(stripe_sandbox, client, 10000)

    partial = client.v1.refunds.create(params={"charge": charge.id, "amount": 2500})
    assert partial.id.startswith("re_") and partial.status == "succeeded"
    after_partial = client.v1.charges.retrieve(charge.id)
    assert after_partial.amount_refunded == 2500 and after_partial.refunded is False

    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create(params={"charge": charge.id, "amount": 7501})
    assert too_much.value.code == "amount_too_large"

    rest = client.v1.refunds.create(params={"payment_intent": charge.payment_intent})
    assert rest.amount == 7500
    refunded = client.v1.charges.retrieve(charge.id)
    assert refunded.amount_refunded == 10000 and refunded.refunded is True
    refund_events = client.v1.events.list(params={"type": "charge.refunded"}).data
    assert [event.data.object.amount_refunded for event in refund_events] == [10000, 2500]
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.refunds.create(params={"charge": charge.id})
    assert again.value.code == "charge_already_refunded"


def test_dispute_creates_a_dispute_event(stripe_sandbox):
    client = stripe_sandbox.client()
    charge = paid_charge(stripe_sandbox, client)

    dispute = stripe_sandbox.control("POST", f"charges/{charge.id}/dispute", {"reason": "fraudulent"})

    assert dispute["id"].startswith("du_") and dispute["charge"] == charge.id and dispute["reason"] == "fraudulent"
    event = client.v1.events.list(params={"type": "charge.dispute.created"}).data[0]
    assert event.data.object.object == "dispute" and event.data.object.id == dispute["id"]
    assert client.v1.charges.retrieve(charge.id).disputed is True


def test_closing_a_dispute_sends_its_outcome_and_a_win_reinstates_the_funds(stripe_sandbox):
    client = stripe_sandbox.client()
    won_charge, lost_charge = paid_charge(stripe_sandbox, client, 4000), paid_charge(stripe_sandbox, client, 3000)
    won = stripe_sandbox.control("POST", f"charges/{won_charge.id}/dispute", {"reason": "fraudulent"})
    lost = stripe_sandbox.control("POST", f"charges/{lost_charge.id}/dispute", {"reason": "fraudulent"})
    assert won["status"] == "needs_response"
    before = client.v1.balance.retrieve().available[0].amount

    assert stripe_sandbox.control("POST", f"disputes/{won['id']}/close", {"outcome": "won"})["status"] == "won"
    stripe_sandbox.control("POST", f"disputes/{lost['id']}/close", {"outcome": "lost"})

    assert client.v1.balance.retrieve().available[0].amount == before + 4000  # only the won amount comes back
    closed = client.v1.events.list(params={"type": "charge.dispute.closed"}).data
    assert [(event.data.object.id, event.data.object.status) for event in closed] == [
        (lost["id"], "lost"), (won["id"], "won")]
    reinstated = client.v1.events.list(params={"type": "charge.dispute.funds_reinstated"}).data
    assert [event.data.object.id for event in reinstated] == [won["id"]]
    assert client.v1.disputes.retrieve(lost["id"]).status == "lost"
    with pytest.raises(SandboxControlError) as again:
        stripe_sandbox.control("POST", f"disputes/{won['id']}/close", {"outcome": "lost"})
    assert again.value.status == 400 and "already closed" in again.value.body["error"]["message"]
