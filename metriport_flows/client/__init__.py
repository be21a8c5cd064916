"""Prefect-free client for Metriport's Medical API: HTTP client, message models, signing."""
