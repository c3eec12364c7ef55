"""Stripe's webhook receiver (public, signature-checked) and the staff's Webhook issues page."""
from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from portal.audit.services import Actor
from portal.auth.models import STAFF_ROLES
from portal.auth.services import roles_required
from portal.errors import ServiceError
from portal.extensions import csrf, db
from portal.payments.services import (EndpointHealth, SignatureRefused, failed_events, get_event_for,
                                      ignore_event, receive_stripe_event, retry_event)

bp = Blueprint("payments", __name__)


@bp.post("/webhooks/stripe")
@csrf.exempt  # Stripe signs its deliveries; it has no session or CSRF token. No login, nothing else exempted.
def stripe_webhook():
    """Store a signed Stripe event once and acknowledge it; the worker applies it."""
    # Deliveries with a Content-Length never reach this view: portal.payments.receiver takes them first, with
    # the same service and the same answers. This one serves the rest (a chunked body).
    try:
        created = receive_stripe_event(request.get_data(), request.headers.get("Stripe-Signature"))
    except SignatureRefused as error:
        db.session.rollback()
        return jsonify(error={"status": 400, "message": error.message}), 400
    return jsonify(received=True, duplicate=not created), 200


@bp.get("/webhooks/issues")
@roles_required(*STAFF_ROLES)
def webhook_issues():
    """Failed Stripe events with Retry and Ignore, and the endpoint's health."""
    return render_template("payments/issues.html", events=failed_events(), health=EndpointHealth())


@bp.post("/webhooks/issues/<int:event_id>/retry")
@roles_required(*STAFF_ROLES)
def retry_webhook_event(event_id):
    return act_on_event(event_id, retry_event, "Sent back to the worker.")


@bp.post("/webhooks/issues/<int:event_id>/ignore")
@roles_required(*STAFF_ROLES)
def ignore_webhook_event(event_id):
    return act_on_event(event_id, ignore_event, "Ignored.")


def act_on_event(event_id, action, done):
    event_row = get_event_for(current_user, event_id)
    try:
        action(event_row, by=Actor.for_user(current_user))
        db.session.commit()
        notice, error = done, None
    except ServiceError as failure:
        db.session.rollback()
        notice, error = None, failure.message
    if request.headers.get("HX-Request"):
        return render_template("payments/_event_row.html", event=event_row, notice=notice, error=error)
    flash(error or f"{event_row.type}: {notice}", "error" if error else "success")
    return redirect(url_for("payments.webhook_issues"))
