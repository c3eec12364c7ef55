"""The pages a customer sees: hosted invoices, their PDFs, and payment links, with Pay and Decline buttons."""

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for

from stripe_sandbox import connect, payments
from stripe_sandbox.errors import StripeError
from stripe_sandbox.pdf import invoice_pdf

bp = Blueprint("pages", __name__)

RESULT_MESSAGES = {
    "card": "Payment received. Thank you!",
    "card_declined": "Your card was declined. Nothing was charged; you can try again.",
    "bank_debit": "Bank debit started. It is processing and will settle in a few days.",
}


def _sandbox():
    return current_app.extensions["stripe_sandbox"]


def _not_found(what):
    return render_template("not_found.html", what=what), 404


@bp.get("/invoices/<invoice_id>")
def invoice_page(invoice_id):
    sb = _sandbox()
    with sb.lock:
        invoice = sb.store.objects["invoice"].get(invoice_id)
        if invoice is None or invoice["status"] == "draft":
            return _not_found("invoice")
        return render_template("invoice.html", invoice=invoice, message=RESULT_MESSAGES.get(request.args.get("result")),
                               error=None)


@bp.post("/invoices/<invoice_id>/pay")
def pay_invoice_page(invoice_id):
    sb = _sandbox()
    outcome = request.form.get("outcome", "card")
    with sb.lock:
        if sb.store.objects["invoice"].get(invoice_id) is None:
            return _not_found("invoice")
        try:
            payments.pay_invoice(sb, invoice_id, outcome)
        except StripeError as error:
            invoice = sb.store.objects["invoice"][invoice_id]
            return render_template("invoice.html", invoice=invoice, message=None, error=error.message), 409
    # Post/redirect/get, so reloading the page does not pay twice.
    return redirect(url_for("pages.invoice_page", invoice_id=invoice_id, result=outcome), code=303)


@bp.get("/invoices/<invoice_id>/pdf")
def invoice_pdf_file(invoice_id):
    sb = _sandbox()
    with sb.lock:
        invoice = sb.store.objects["invoice"].get(invoice_id)
        if invoice is None or invoice["status"] == "draft":
            return _not_found("invoice")
        body = invoice_pdf(invoice)
        filename = f"{invoice['number']}.pdf"
    return Response(body, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{filename}"'})


@bp.get("/pay/<link_id>")
def payment_link_page(link_id):
    sb = _sandbox()
    with sb.lock:
        link = sb.store.objects["payment_link"].get(link_id)
        if link is None:
            return _not_found("payment link")
        return render_template("payment_link.html", link=link, items=sb.line_items[link_id], error=None)


@bp.post("/pay/<link_id>")
def pay_payment_link_page(link_id):
    sb = _sandbox()
    outcome = request.form.get("outcome", "card")
    with sb.lock:
        link = sb.store.objects["payment_link"].get(link_id)
        if link is None:
            return _not_found("payment link")
        items = sb.line_items[link_id]
        try:
            session = payments.pay_payment_link(sb, link_id, outcome)
        except StripeError as error:
            return render_template("payment_link.html", link=link, items=items, error=error.message), 409
        if session["status"] != "complete":
            return render_template("payment_link.html", link=link, items=items,
                                   error=RESULT_MESSAGES["card_declined"]), 402
        after = link["after_completion"]
        if after["type"] == "redirect":
            return redirect(after["redirect"]["url"].replace("{CHECKOUT_SESSION_ID}", session["id"]), code=303)
        message = after["hosted_confirmation"]["custom_message"] or RESULT_MESSAGES[outcome]
        return render_template("confirmation.html", link=link, session=session, message=message)


@bp.get("/connect/onboarding/<token>")
def onboarding_page(token):
    """The hosted onboarding an Account Link leads to; an expired or used link goes to its refresh_url, as at Stripe."""
    sb = _sandbox()
    with sb.lock:
        link = sb.onboarding_links.get(token)
        if link is None:
            return _not_found("onboarding link")
        if link["used"] or link["expires_at"] < sb.clock.now():
            return redirect(link["refresh_url"], code=303)
        account = sb.store.get("account", link["account"])
        return render_template("onboarding.html", account=account, token=token)


@bp.post("/connect/onboarding/<token>")
def complete_onboarding_page(token):
    """"Complete onboarding": the account is enabled, `account.updated` is sent, and the partner returns."""
    sb = _sandbox()
    with sb.lock:
        link = sb.onboarding_links.get(token)
        if link is None:
            return _not_found("onboarding link")
        if link["used"] or link["expires_at"] < sb.clock.now():
            return redirect(link["refresh_url"], code=303)
        connect.complete_onboarding(sb, link["account"])
        link["used"] = True
    return redirect(link["return_url"], code=303)
