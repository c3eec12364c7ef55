"""Payment status sync: Stripe's webhooks, their processing, and reconciliation (issue 5)."""
