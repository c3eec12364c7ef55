"""A local, stateful stand-in for the subset of Stripe's API that Closeout uses; see README.md."""
