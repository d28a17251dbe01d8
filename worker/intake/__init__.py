"""Intake: checking a send request and persisting one result row per recipient, in the API's
transaction, before anything is enqueued."""
