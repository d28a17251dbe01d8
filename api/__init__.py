"""The HTTP face of Herald over ``worker/``: routes, SigV4, errors, rate limits, dashboard, CLI."""
