"""Metriport patient records, orchestrated by Prefect, driven by Metriport's webhooks."""
