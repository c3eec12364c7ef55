"""Customer document links: a proof-of-work PDF behind a random, hashed, expiring and revocable token."""
