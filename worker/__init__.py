"""Herald's domain: everything but HTTP. ``api/`` imports from here, never the reverse."""
