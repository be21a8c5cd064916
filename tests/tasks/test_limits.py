"""Metriport's rate limits as Prefect global concurrency limits: the arithmetic (plain, property-based) and
the create/update against the session stack's real Prefect server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from metriport_flows.domain.rate_limits import (
    Operation,
    RateLimit,
    RateLimitSettings,
    limit_name,
    rate_limits,
)
from tasks.limits import ensure_rate_limits


def test_defaults_are_metriports_published_limits():
    by_name = {limit.name: limit for limit in rate_limits(RateLimitSettings(_env_file=None))}
    assert set(by_name) == {"metriport-document-query", "metriport-consolidated-query", "metriport-patient-create"}
    assert by_name["metriport-document-query"] == RateLimit("metriport-document-query", 5, 0.25)
    assert by_name["metriport-consolidated-query"].max_calls_in(60) == 120
    assert by_name["metriport-patient-create"].max_calls_in(60) == 15


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("METRIPORT_RATE_DOCUMENT_QUERY", "100")
    monkeypatch.setenv("METRIPORT_RATE_WINDOW_SECONDS", "30")
    limit = RateLimit.for_operation(Operation.document_query, RateLimitSettings(_env_file=None))
    assert limit.max_calls_in(30) == 100 and limit.slots == 25


def test_a_limit_below_two_calls_per_window_is_refused():
    with pytest.raises(ValidationError):
        RateLimitSettings(document_query=1, _env_file=None)


@given(
    per_window=st.integers(min_value=2, max_value=10_000),
    window=st.floats(min_value=0.5, max_value=3600),
    burst=st.floats(min_value=0.01, max_value=0.99),
)
def test_no_window_ever_admits_more_than_metriport_allows(per_window, window, burst):
    settings = RateLimitSettings(document_query=per_window, window_seconds=window, burst_fraction=burst, _env_file=None)
    limit = RateLimit.for_operation(Operation.document_query, settings)
    assert 1 <= limit.slots < per_window and limit.slot_decay_per_second > 0
    assert limit.max_calls_in(window) == pytest.approx(per_window)
    assert limit.name == limit_name(Operation.document_query)


@pytest.mark.e2e
async def test_ensure_creates_then_updates_the_limits_on_the_server(local_stack):
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api=local_stack.prefect_api_url) as client:
        try:
            await ensure_rate_limits(RateLimitSettings(_env_file=None), client)
            await ensure_rate_limits(RateLimitSettings(_env_file=None), client)
            first = await client.read_global_concurrency_limit_by_name("metriport-document-query")
            assert (first.limit, first.slot_decay_per_second, first.active) == (5, 0.25, True)
            await ensure_rate_limits(RateLimitSettings(document_query=40, _env_file=None), client)
            second = await client.read_global_concurrency_limit_by_name("metriport-document-query")
            assert (second.id, second.limit, second.slot_decay_per_second) == (first.id, 10, 0.5)
        finally:
            for limit in rate_limits(RateLimitSettings(_env_file=None)):
                await client.delete_global_concurrency_limit_by_name(limit.name)
