"""Referral partners: attribution, fee rules, payouts through Stripe Connect, and the partner portal (issue 6)."""
