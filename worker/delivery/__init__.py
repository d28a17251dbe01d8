"""Delivery: the worker side. Claim a batch, render, send through a provider, record the outcome,
retry; the Celery tasks, the embedded in-process worker, and the recovery and retention loops."""
