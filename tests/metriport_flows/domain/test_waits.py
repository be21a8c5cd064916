"""How long a wait holds its slot while runs queue for one: the floor, the stage's p90 reply, the window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metriport_flows.domain.waits import MIN_REPLIES, Deadlines


def deadlines(hot: float, give_way: float | None) -> Deadlines:
    return Deadlines(soft_seconds=60, hard_seconds=600, hot_window_seconds=hot, give_way_seconds=give_way)


def test_without_a_floor_a_wait_never_gives_way() -> None:
    assert deadlines(30, None).give_way_after([1.0] * 50) is None


def test_too_few_replies_leave_the_floor() -> None:
    assert deadlines(30, 2).give_way_after([20.0] * (MIN_REPLIES - 1)) == 2


def test_slower_replies_raise_it_to_their_p90() -> None:
    replies = [float(seconds) for seconds in range(1, 11)]
    assert 9 <= deadlines(30, 2).give_way_after(replies) <= 10


def test_replies_the_hot_window_could_not_catch_do_not_count() -> None:
    """Most replies took minutes: the ten fast ones say when to give way, the slow ones cannot raise it."""
    replies = [3.0] * 10 + [600.0] * 40
    assert deadlines(30, 2).give_way_after(replies) == 3
    assert deadlines(30, 2).give_way_after([600.0] * 50) == 2


@given(
    hot=st.floats(0, 60),
    floor=st.floats(0, 60),
    replies=st.lists(st.floats(0, 600), max_size=60),
)
def test_it_is_never_under_the_floor_nor_over_the_hot_window(hot: float, floor: float, replies: list[float]) -> None:
    after = deadlines(hot, floor).give_way_after(replies)
    assert after is not None and min(floor, hot) <= after <= hot
