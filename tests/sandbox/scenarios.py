"""Small Stripe scenarios the sandbox tests build on, written with the SDK as the portal would."""

import urllib.request

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def new_customer(client, **fields):
    """A customer with an email, as Closeout creates one per client."""
    params = {"email": "pat@example.com", "name": "Pat Jones"}
    params.update(fields)
    return client.v1.customers.create(params=params)


def open_invoice(client, customer=None, lines=((2500, 1, "Gutter cleaning"),), tax_rates=(), days_until_due=14,
                 metadata=None):
    """A finalized send_invoice invoice with one invoice item per `(unit_amount, quantity, description)` line."""
    customer = customer or new_customer(client)
    product = client.v1.products.create(params={"name": "Field service"})
    invoice = client.v1.invoices.create(params={
        "customer": customer.id,
        "collection_method": "send_invoice",
        "days_until_due": days_until_due,
        "metadata": metadata or {"job_id": "42"},
    })
    for unit_amount, quantity, description in lines:
        item = {
            "customer": customer.id,
            "invoice": invoice.id,
            "price_data": {"currency": "usd", "product": product.id, "unit_amount": unit_amount},
            "quantity": quantity,
            "description": description,
        }
        if tax_rates:
            item["tax_rates"] = [rate.id for rate in tax_rates]
        client.v1.invoice_items.create(params=item)
    return client.v1.invoices.finalize_invoice(invoice.id)


def payment_link(client, amounts=(5000,), **params):
    """A payment link with one `price_data` line per amount, tagged with a job id as the portal tags them."""
    line_items = [
        {"price_data": {"currency": "usd", "unit_amount": amount, "product_data": {"name": f"Line {index + 1}"}},
         "quantity": 1}
        for index, amount in enumerate(amounts)
    ]
    params.setdefault("metadata", {"job_id": "42"})
    params.setdefault("payment_intent_data", {"metadata": {"job_id": "42"}})
    return client.v1.payment_links.create(params={"line_items": line_items, **params})


def paid_charge(sandbox, client, amount=5000):
    """A succeeded charge, paid by card through a payment link."""
    link = payment_link(client, (amount,))
    session = sandbox.control("POST", f"payment_links/{link.id}/pay", {"outcome": "card"})
    intent = client.v1.payment_intents.retrieve(session["payment_intent"])
    return client.v1.charges.retrieve(intent.latest_charge)


def webhook_endpoint(client, receiver, enabled_events=("*",), connect=False):
    """A webhook endpoint delivering to the receiver (a Connect one: events on connected accounts); returns it
    with its signing secret."""
    params = {"url": receiver.url, "enabled_events": list(enabled_events)}
    if connect:
        params["connect"] = True
    return client.v1.webhook_endpoints.create(params=params)


def event_types(client, **params):
    """Types of the events Stripe lists, newest first."""
    return [event.type for event in client.v1.events.list(params={"limit": 100, **params}).data]


def http_get(url):
    """GET a page the way a browser would; returns (status, body text)."""
    with NO_PROXY.open(url, timeout=10) as response:
        return response.status, response.read().decode()


def http_post_form(url, fields):
    """POST a form the way a browser would, following the redirect; returns (status, final URL, body text)."""
    data = "&".join(f"{name}={value}" for name, value in fields.items()).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with NO_PROXY.open(request, timeout=10) as response:
        return response.status, response.url, response.read().decode()
