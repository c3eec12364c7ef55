"""Reminders (dunning): the pay link again on each client's schedule, once per step, stopped by payment."""
