"""The read side: send results as Pinpoint answers them, dashboard reports, metrics, readiness."""
