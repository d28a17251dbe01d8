"""Management: the resources a client configures (apps, endpoints, channels, sender identities)
and Herald's own access keys. Called by the API; never runs in a worker."""
