"""Remote ids as file names: never outside their folder, never two ids on one file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metriport_flows.domain.bulk_documents import documents_dir
from metriport_flows.domain.file_names import UnsafeName, file_name, inside, remote_id
from metriport_flows.webhook.handlers.bulk import result_csv_path
from metriport_flows.webhook.handlers.consolidated import bundle_path
from metriport_flows.webhook.handlers.notifications import notification_path

HOSTILE = [
    ".",
    "..",
    "a/b",
    "../../x",
    "a^b",
    "a_b",
    "-p1",
    "x\x00y",
    "名前",
    "A" * 150 + "1",
    "A" * 150 + "2",
    "inbox.db",
]


def _all_paths(root: Path, first: str, second: str) -> list[Path]:
    return [
        documents_dir(root, first, second),
        documents_dir(root, "p", first) / "x",
        notification_path(root, first, second),
        bundle_path(root, first, second, "json"),
        result_csv_path(root, first),
    ]


@pytest.mark.parametrize("value", HOSTILE)
def test_every_id_to_path_mapping_stays_inside_its_root(tmp_path: Path, value: str) -> None:
    root = tmp_path / "data" / "bundles"
    for path in _all_paths(root, value, value):
        assert path.resolve().is_relative_to(root.resolve()) and path.resolve() != root.resolve()
    assert not (tmp_path / "data" / "inbox.db").exists()


def test_ids_that_used_to_share_a_name_get_their_own(tmp_path: Path) -> None:
    pairs = [("a^b", "a_b"), ("a/b", "a_b"), ("A" * 150 + "1", "A" * 150 + "2"), ("x.pdf", "x")]
    for first, second in pairs:
        assert documents_dir(tmp_path, "p", first) != documents_dir(tmp_path, "p", second)
        assert notification_path(tmp_path, "p", first) != notification_path(tmp_path, "p", second)
        assert result_csv_path(tmp_path, first) != result_csv_path(tmp_path, second)
    assert file_name("x.pdf") + "" != file_name("x", ".pdf")


@pytest.mark.parametrize("value", ["", "\ud800", "é" * 101, "x" * 201])
def test_what_cannot_be_mapped_is_refused_not_truncated(value: str) -> None:
    with pytest.raises(UnsafeName):
        file_name(value)


def test_a_path_through_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "escape").symlink_to(tmp_path)
    with pytest.raises(UnsafeName):
        inside(tmp_path / "root", "escape", "inbox.db")


ids = st.text(min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(first=ids, second=ids)
def test_distinct_ids_never_share_a_path_and_every_path_stays_inside(first: str, second: str) -> None:
    try:
        names = file_name(first), file_name(second)
    except UnsafeName:
        return  # lone surrogates: refused
    assert (names[0] == names[1]) == (first == second)
    assert remote_id(names[0]) == first
    root = Path("/srv/bundles")
    for name in names:
        assert "/" not in name and name not in (".", "..") and not name.startswith(("-", "."))
        assert inside(root, name, "documents", name).is_relative_to(root)
