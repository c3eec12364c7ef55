"""The owner's dashboard: cash figures, aging, billing lag, accounting exports and the audit log (issue 7)."""
