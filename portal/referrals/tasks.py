"""RQ tasks for referral payouts: plain functions that take ids and reload rows."""
from portal.billing.stripe_gateway import StripeRefused
from portal.queue import is_last_attempt
from portal.referrals import settlement


def transfer_payout(payout_id):
    """Create the Stripe Transfer for one payout; transient failures go back to RQ's retry with backoff."""
    try:
        return settlement.transfer_payout(payout_id)
    except StripeRefused as error:  # a refusal no retry can fix: failed at once, for a person's Retry
        settlement.note_transfer_failure(payout_id, error, final=True)
        raise
    except Exception as error:  # noted on the payout for the ledger page, then re-raised for RQ's retry
        settlement.note_transfer_failure(payout_id, error, final=is_last_attempt())
        raise


def release_due_payouts():
    """Scheduled hourly: payouts whose hold period ended go out; lost transfer tasks are queued again."""
    return [payout.id for payout in settlement.release_due_payouts()]
