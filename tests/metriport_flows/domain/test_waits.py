"""How long a wait holds its slot while runs queue for one: the floor, what holding costs against what a
resume costs, the window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metriport_flows.domain.waits import MAX_CPU_BUSY, MIN_REPLIES, Deadlines, resume_seconds_under_load


def deadlines(hot: float, give_way: float | None) -> Deadlines:
    return Deadlines(soft_seconds=60, hard_seconds=600, hot_window_seconds=hot, give_way_seconds=give_way)


def test_without_a_floor_a_wait_never_gives_way() -> None:
    assert deadlines(30, None).give_way_after([600.0] * 50, resume_seconds=0) is None


def test_too_few_replies_hold_the_window() -> None:
    """Without evidence a wait behaves as the window held whole, even where the few replies look slow."""
    assert deadlines(30, 2).give_way_after([600.0] * (MIN_REPLIES - 1), resume_seconds=1) is None
    assert deadlines(30, 2).give_way_after([600.0] * MIN_REPLIES, resume_seconds=1) == 2


def test_replies_slower_than_a_resume_give_way_at_the_floor() -> None:
    """Metriport takes minutes: holding the slot for the window only delays the resume it needs anyway."""
    assert deadlines(30, 2).give_way_after([600.0] * 50, resume_seconds=10) == 2
    assert deadlines(30, 2).give_way_after([float(s) for s in range(20, 70)], resume_seconds=10) == 2


def test_replies_sooner_than_a_resume_hold_the_slot_until_past_every_recent_one() -> None:
    """Replies in 0-5 s and a resume that costs 10 s: holding is cheaper, until the wait is older than any
    recent reply (then nothing says the reply is near)."""
    replies = [0.1 * k for k in range(51)]
    assert deadlines(30, 2).give_way_after(replies, resume_seconds=10) == 5.0


def test_a_cheap_resume_gives_way_sooner() -> None:
    replies = [0.1 * k for k in range(51)]
    after = deadlines(30, 2).give_way_after(replies, resume_seconds=0.5)
    assert after is not None and 2 <= after < 5


def test_it_holds_for_the_replies_it_can_catch_soon_then_gives_way_before_those_past_the_window() -> None:
    """At 2 s, four in five later replies land 3 s on: holding (8 s on average) costs no more than the
    resumes it saves (0.8 x 10 s). At 5 s only replies past the window are left: a resume is due anyway."""
    replies = [5.0] * 40 + [31.0] * 10
    assert deadlines(30, 2).give_way_after(replies, resume_seconds=10) == 5


@given(
    hot=st.floats(0, 60),
    floor=st.floats(0, 60),
    replies=st.lists(st.floats(0, 600), max_size=60),
    resume=st.floats(0, 60),
)
def test_it_is_never_under_the_floor_nor_over_the_hot_window(
    hot: float, floor: float, replies: list[float], resume: float
) -> None:
    after = deadlines(hot, floor).give_way_after(replies, resume)
    assert after is None or min(floor, hot) <= after <= hot


def test_a_resume_costs_its_start_over_the_idle_share_of_the_cpus() -> None:
    assert resume_seconds_under_load(1.5, 0.0) == 1.5
    assert resume_seconds_under_load(1.5, 0.5) == 3.0
    assert resume_seconds_under_load(1.5, -0.1) == 1.5  # a clock step: never cheaper than the start
    assert resume_seconds_under_load(1.5, 1.0) == resume_seconds_under_load(1.5, MAX_CPU_BUSY) == pytest.approx(30.0)
