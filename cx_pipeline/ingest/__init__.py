"""Ingest: pulling the upstream feeds over HTTP, landing them, and judging every batch by its contract."""
