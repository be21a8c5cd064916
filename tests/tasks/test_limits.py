"""Metriport's rate limits as one shared schedule of start calls: the arithmetic (plain, property-based),
the reservations on SQLite and PostgreSQL from several processes at once, and the retry of a start call
in a slot of its own."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from metriport_devtools.rates import most_in_any_interval
from metriport_flows.client.errors import ServerError
from metriport_flows.domain.rate_limits import Operation, RateLimit, RateLimitSettings, rate_limits
from metriport_flows.store import Store
from tasks.limits import call_within_limit, ensure_rate_limits


def test_most_in_any_interval_counts_the_densest_one():
    assert most_in_any_interval([0, 1, 2, 6.5, 7, 7.2], 6) == 4 and most_in_any_interval([], 6) == 0


def test_defaults_are_metriports_published_limits_with_a_one_second_margin():
    by_operation = {limit.operation: limit for limit in rate_limits(RateLimitSettings(_env_file=None))}
    assert by_operation[Operation.document_query] == RateLimit(Operation.document_query, 20, 60.0, 1.0)
    assert by_operation[Operation.consolidated_query].per_window == 120
    assert by_operation[Operation.patient_create].per_window == 15
    assert by_operation[Operation.document_query].share_of_metriports_limit == pytest.approx(60 / 61)


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("METRIPORT_RATE_DOCUMENT_QUERY", "100")
    monkeypatch.setenv("METRIPORT_RATE_WINDOW_SECONDS", "30")
    monkeypatch.setenv("METRIPORT_RATE_MARGIN_SECONDS", "0.5")
    limit = RateLimit.for_operation(Operation.document_query, RateLimitSettings(_env_file=None))
    assert (limit.per_window, limit.span) == (100, 30.5)


def test_a_limit_below_one_call_per_window_is_refused():
    with pytest.raises(ValidationError):
        RateLimitSettings(document_query=0, _env_file=None)


def schedule(limit: RateLimit, requests: list[float]) -> list[float]:
    recent: list[float] = []
    reserved = []
    for now in requests:
        at, recent = limit.reserve(recent, now)
        reserved.append(at)
    return reserved


@given(
    per_window=st.integers(min_value=1, max_value=40),
    window=st.floats(min_value=0.5, max_value=120),
    margin=st.floats(min_value=0, max_value=5),
    gaps=st.lists(st.floats(min_value=0, max_value=30), min_size=1, max_size=120),
)
def test_no_interval_of_a_window_and_its_margin_ever_holds_more_than_the_limit(per_window, window, margin, gaps):
    limit = RateLimit(Operation.document_query, per_window, window, margin)
    requests = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    reserved = schedule(limit, requests)
    assert all(at >= now for at, now in zip(reserved, requests, strict=True))
    assert reserved == sorted(reserved)
    # A call that reaches Metriport up to `margin` late still leaves every fixed window within the limit.
    assert most_in_any_interval(reserved, limit.span * (1 - 1e-9)) <= per_window


@given(per_window=st.integers(min_value=1, max_value=40), windows=st.integers(min_value=2, max_value=10))
def test_under_steady_demand_the_schedule_runs_at_the_limit_less_the_margin(per_window, windows):
    limit = RateLimit(Operation.document_query, per_window, 60.0, 1.0)
    reserved = schedule(limit, [0.0] * (per_window * windows))
    # one window's count at once, then exactly one more window's count every span: 98 % of Metriport's rate
    assert reserved[-1] == pytest.approx((windows - 1) * limit.span)
    assert most_in_any_interval(reserved, limit.span) == per_window


def reserve_many(url: str, count: int) -> list[float]:
    """In a process of its own: `count` reservations on the store at `url`, their reserved times."""
    store = Store(url)
    try:
        default = RateLimit(Operation.document_query, 1, 1.0, 0.0)
        return [store.reserve_call(Operation.document_query, default).at for _ in range(count)]
    finally:
        store.dispose()


def test_processes_reserving_at_once_share_one_exact_schedule(store: Store):
    limit = RateLimit(Operation.document_query, per_window=3, window_seconds=0.4, margin_seconds=0.1)
    store.set_rate_limit(limit)
    processes, each = 4, 12
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        per_process = list(pool.map(reserve_many, [store.url] * processes, [each] * processes))
    reserved = sorted(at for times in per_process for at in times)
    assert len(reserved) == processes * each and all(len(times) == each for times in per_process)
    assert most_in_any_interval(reserved, limit.span * (1 - 1e-9)) == limit.per_window
    assert store.reserved_calls(Operation.document_query) == reserved[-limit.per_window :]
    assert store.rate_limit(Operation.document_query) == limit


def test_a_missing_limit_is_the_default_and_setting_it_again_keeps_the_reservations(store: Store):
    default = RateLimit(Operation.consolidated_query, 2, 60.0, 1.0)
    first, second, third = (store.reserve_call(Operation.consolidated_query, default) for _ in range(3))
    assert first.wait == 0 and second.wait == 0 and third.at == pytest.approx(first.at + 61.0)
    assert store.rate_limit(Operation.consolidated_query) == default
    ensure_rate_limits(RateLimitSettings(consolidated_query=500, _env_file=None), store)
    assert store.rate_limit(Operation.consolidated_query) == RateLimit(Operation.consolidated_query, 500, 60.0, 1.0)
    assert store.reserved_calls(Operation.consolidated_query) == [second.at, third.at]  # one window's count


async def test_every_attempt_of_a_start_call_takes_a_slot_of_its_own(sqlite_store: Store):
    sqlite_store.set_rate_limit(RateLimit(Operation.document_query, 100, 60.0, 1.0))
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(len(sqlite_store.reserved_calls(Operation.document_query)))
        if len(attempts) < 3:
            raise ServerError(503, "Service Unavailable")
        return "request-id"

    assert await call_within_limit(Operation.document_query, flaky, sqlite_store) == "request-id"
    assert attempts == [1, 2, 3]
