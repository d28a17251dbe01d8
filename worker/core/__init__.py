"""Plumbing every role uses: configuration, database, models, secrets, errors, logs, outages,
and the one vocabulary (channel types, delivery statuses, outcomes, rendered messages)."""
