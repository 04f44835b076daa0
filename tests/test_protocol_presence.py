"""Presence state and its sync algorithm: :class:`PresenceTracker` (PR-02 .. PR-06).

Payloads are the server's shapes from PROTOCOL.md section 6.2: ``presence_state`` is
``{key: {"metas": [meta, ...]}}`` and ``presence_diff`` is ``{"joins": ..., "leaves": ...}``, each
meta carrying ``phx_ref`` (and ``phx_ref_prev`` on an update).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_realtime._presence import copy_json
from trio_realtime.protocol import (
    JSONObject,
    JSONValue,
    PresenceEvent,
    PresenceTracker,
    ProtocolError,
    transform_state,
)

# The PROTOCOL.md 6.2 examples.
STATE: dict[str, Any] = {
    "u1": {"metas": [{"phx_ref": "GEy9P7s0zaEQ7wBh", "name": "alice"}]},
    "u2": {"metas": [{"phx_ref": "GEy9QAbcd1234xyz", "name": "bob"}]},
}
UPDATE_DIFF: dict[str, Any] = {
    "joins": {
        "u1": {
            "metas": [{"phx_ref": "GEy9R", "phx_ref_prev": "GEy9P7s0zaEQ7wBh", "name": "alice2"}]
        }
    },
    "leaves": {"u1": {"metas": [{"phx_ref": "GEy9P7s0zaEQ7wBh", "name": "alice"}]}},
}


def meta(ref: str, **fields: JSONValue) -> JSONObject:
    """A server meta: the tracked payload plus its ``phx_ref``."""
    return {"phx_ref": ref, **fields}


def entry(*metas: JSONValue) -> JSONObject:
    """A server presence entry, ``{"metas": [...]}``."""
    return {"metas": list(metas)}


def summary(events: list[PresenceEvent]) -> list[tuple[str, str | None, list[Any], list[Any]]]:
    """Events as ``(event, key, refs of current_presences, refs of presences)``."""
    return [
        (
            event.event,
            event.key,
            [m.get("presence_ref") for m in event.current_presences],
            [m.get("presence_ref") for m in event.presences],
        )
        for event in events
    ]


def synced(join_ref: str = "1", state: object = None) -> PresenceTracker:
    tracker = PresenceTracker()
    tracker.sync_state(STATE if state is None else state, join_ref)
    return tracker


# ---------------------------------------------------------------------------------------------
# PR-05: the user-facing shape.


def test_pr05_metas_unwrapped_phx_ref_renamed_phx_ref_prev_dropped() -> None:
    """PR-05: ``metas`` unwrapped, ``phx_ref`` -> ``presence_ref``, ``phx_ref_prev`` dropped."""
    assert transform_state(STATE) == {
        "u1": [{"presence_ref": "GEy9P7s0zaEQ7wBh", "name": "alice"}],
        "u2": [{"presence_ref": "GEy9QAbcd1234xyz", "name": "bob"}],
    }
    assert transform_state(UPDATE_DIFF["joins"]) == {
        "u1": [{"presence_ref": "GEy9R", "name": "alice2"}]
    }
    tracker = synced()
    events = tracker.sync_diff(UPDATE_DIFF, "1")
    for event in events:
        for item in event.presences + event.current_presences:
            assert "phx_ref" not in item
            assert "phx_ref_prev" not in item
    assert tracker.snapshot() == {
        "u1": [{"presence_ref": "GEy9R", "name": "alice2"}],
        "u2": [{"presence_ref": "GEy9QAbcd1234xyz", "name": "bob"}],
    }


def test_pr05_transform_state_leaves_the_input_alone() -> None:
    """PR-05: converting does not modify the frame payload it was given."""
    raw = {"u1": entry(meta("r1", name="a", phx_ref_prev="r0"))}
    transform_state(raw)
    assert raw == {"u1": {"metas": [{"phx_ref": "r1", "name": "a", "phx_ref_prev": "r0"}]}}


@pytest.mark.parametrize(
    "raw",
    [
        [],
        "state",
        None,
        {"u1": "x"},
        {"u1": {"metas": "x"}},
        {"u1": {"no_metas": []}},
        {"u1": {"metas": ["not an object"]}},
        {"u1": {"metas": [{"phx_ref": ["unhashable"]}]}},
        {"u1": {"metas": [{"phx_ref": {"a": 1}}]}},
        {"u1": {"metas": [{"presence_ref": []}]}},
    ],
)
def test_pr05_malformed_presence_maps_raise_protocol_error(raw: object) -> None:
    """PR-05: a malformed map is a ProtocolError, and the tracker's state is left unchanged."""
    with pytest.raises(ProtocolError):
        transform_state(raw)
    tracker = synced()
    before = tracker.snapshot()
    with pytest.raises(ProtocolError):
        tracker.sync_state(raw, "1")
    if raw:  # a missing or empty ``joins`` / ``leaves`` is no change
        with pytest.raises(ProtocolError):
            tracker.sync_diff({"joins": raw, "leaves": {}}, "1")
        with pytest.raises(ProtocolError):
            tracker.sync_diff({"joins": {}, "leaves": raw}, "1")
    assert tracker.snapshot() == before
    assert tracker.synced_join_ref == "1"


def test_pr05_diff_payload_must_be_an_object() -> None:
    """PR-05: a ``presence_diff`` payload that is not an object is a ProtocolError."""
    with pytest.raises(ProtocolError):
        PresenceTracker().sync_diff(["joins"], "1")


# ---------------------------------------------------------------------------------------------
# PR-02: presence_state replaces the state.


def test_pr02_first_state_emits_joins_then_sync() -> None:
    """PR-02: every member of the first state joins, then one sync with the whole state."""
    tracker = PresenceTracker()
    events = tracker.sync_state(STATE, "1")
    assert summary(events) == [
        ("join", "u1", [], ["GEy9P7s0zaEQ7wBh"]),
        ("join", "u2", [], ["GEy9QAbcd1234xyz"]),
        ("sync", None, [], []),
    ]
    assert events[-1].state == transform_state(STATE)
    assert events[0].state is None
    assert tracker.synced_join_ref == "1"


def test_pr02_new_state_replaces_detecting_joins_and_leaves() -> None:
    """PR-02: a later state is diffed against the current one: absent members leave."""
    tracker = synced()
    new_state = {
        "u1": entry(meta("GEy9P7s0zaEQ7wBh", name="alice"), meta("r-u1-2", name="alice@phone")),
        "u3": entry(meta("r-u3", name="carol")),
    }
    events = tracker.sync_state(new_state, "2")
    assert summary(events) == [
        ("join", "u1", ["GEy9P7s0zaEQ7wBh"], ["r-u1-2"]),
        ("join", "u3", [], ["r-u3"]),
        ("leave", "u2", [], ["GEy9QAbcd1234xyz"]),
        ("sync", None, [], []),
    ]
    assert tracker.snapshot() == transform_state(new_state)
    assert events[-1].state == transform_state(new_state)
    assert tracker.synced_join_ref == "2"


def test_pr02_replaced_meta_of_a_kept_key_leaves_and_joins() -> None:
    """PR-02: a key whose meta changed ref gets a join for the new and a leave for the old."""
    tracker = synced(state={"u1": entry(meta("old", v=1))})
    events = tracker.sync_state({"u1": entry(meta("new", v=2))}, "1")
    assert summary(events) == [
        ("join", "u1", ["old"], ["new"]),
        ("leave", "u1", ["new"], ["old"]),
        ("sync", None, [], []),
    ]
    assert tracker.snapshot() == {"u1": [{"presence_ref": "new", "v": 2}]}


def test_pr02_identical_state_emits_only_sync() -> None:
    """PR-02: the same state again changes nothing: only a sync."""
    tracker = synced()
    assert summary(tracker.sync_state(STATE, "1")) == [("sync", None, [], [])]


def test_pr02_empty_state_makes_everyone_leave() -> None:
    """PR-02: an empty state makes every member leave."""
    tracker = synced()
    events = tracker.sync_state({}, "1")
    assert [(e.event, e.key) for e in events] == [
        ("leave", "u1"),
        ("leave", "u2"),
        ("sync", None),
    ]
    assert tracker.snapshot() == {}


# ---------------------------------------------------------------------------------------------
# PR-03: presence_diff updates incrementally.


def test_pr03_diff_join_adds_a_meta_to_a_key() -> None:
    """PR-03: a join for a known key adds a meta; the event carries the metas before it."""
    tracker = synced()
    events = tracker.sync_diff({"joins": {"u1": entry(meta("r2", name="a2"))}}, "1")
    assert summary(events) == [
        ("join", "u1", ["GEy9P7s0zaEQ7wBh"], ["r2"]),
        ("sync", None, [], []),
    ]
    assert [m["presence_ref"] for m in tracker.snapshot()["u1"]] == ["GEy9P7s0zaEQ7wBh", "r2"]


def test_pr03_update_diff_from_protocol_example() -> None:
    """PR-03: re-track (join with phx_ref_prev + leave of the old meta) replaces the meta."""
    tracker = synced()
    events = tracker.sync_diff(UPDATE_DIFF, "1")
    assert summary(events) == [
        ("join", "u1", ["GEy9P7s0zaEQ7wBh"], ["GEy9R"]),
        ("leave", "u1", ["GEy9R"], ["GEy9P7s0zaEQ7wBh"]),
        ("sync", None, [], []),
    ]
    assert events[-1].state == tracker.snapshot()


def test_pr03_key_removed_when_its_last_meta_leaves() -> None:
    """PR-03: a key stays while it has metas, and is removed when the last one leaves."""
    tracker = synced(state={"u1": entry(meta("a"), meta("b"))})
    events = tracker.sync_diff({"leaves": {"u1": entry(meta("a"))}}, "1")
    assert summary(events) == [("leave", "u1", ["b"], ["a"]), ("sync", None, [], [])]
    assert "u1" in tracker.snapshot()
    events = tracker.sync_diff({"joins": {}, "leaves": {"u1": entry(meta("b"))}}, "1")
    assert summary(events) == [("leave", "u1", [], ["b"]), ("sync", None, [], [])]
    assert tracker.snapshot() == {}


def test_pr03_a_key_without_metas_is_not_present() -> None:
    """PR-03: an entry with an empty list of metas neither joins nor stays in the state."""
    tracker = PresenceTracker()
    assert summary(tracker.sync_state({"u1": entry()}, "1")) == [("sync", None, [], [])]
    assert tracker.snapshot() == {}
    events = tracker.sync_diff({"joins": {"u2": entry()}, "leaves": {"u1": entry()}}, "1")
    assert summary(events) == [("sync", None, [], [])]
    assert tracker.snapshot() == {}


def test_pr03_leave_of_an_unknown_key_is_ignored() -> None:
    """PR-03: a leave for a key that is not present produces no leave event."""
    tracker = synced()
    events = tracker.sync_diff({"leaves": {"ghost": entry(meta("x"))}}, "1")
    assert summary(events) == [("sync", None, [], [])]
    assert tracker.snapshot() == transform_state(STATE)


def test_pr03_join_with_a_known_ref_replaces_not_duplicates() -> None:
    """PR-03: joining a meta whose ref is already present replaces it (no duplicate)."""
    tracker = synced(state={"u1": entry(meta("a", v=1))})
    tracker.sync_diff({"joins": {"u1": entry(meta("a", v=2))}}, "1")
    assert tracker.snapshot() == {"u1": [{"presence_ref": "a", "v": 2}]}


# ---------------------------------------------------------------------------------------------
# PR-04: diffs before the state are buffered and replayed in order.


def test_pr04_diffs_before_the_first_state_are_buffered_then_replayed_in_order() -> None:
    """PR-04: diffs that arrive before the state wait, then apply in arrival order."""
    tracker = PresenceTracker()
    assert tracker.sync_diff({"joins": {"u3": entry(meta("r3"))}}, "1") == []
    assert tracker.sync_diff({"leaves": {"u2": entry(meta("GEy9QAbcd1234xyz"))}}, "1") == []
    assert tracker.sync_diff({"leaves": {"u3": entry(meta("r3"))}}, "1") == []
    assert tracker.sync_diff({"joins": {"u3": entry(meta("r3b"))}}, "1") == []
    assert tracker.pending_diffs == 4
    assert tracker.snapshot() == {}

    events = tracker.sync_state(STATE, "1")
    assert summary(events) == [
        ("join", "u1", [], ["GEy9P7s0zaEQ7wBh"]),
        ("join", "u2", [], ["GEy9QAbcd1234xyz"]),
        ("join", "u3", [], ["r3"]),
        ("leave", "u2", [], ["GEy9QAbcd1234xyz"]),
        ("leave", "u3", [], ["r3"]),
        ("join", "u3", [], ["r3b"]),
        ("sync", None, [], []),
    ]
    assert tracker.pending_diffs == 0
    assert tracker.snapshot() == {
        "u1": [{"presence_ref": "GEy9P7s0zaEQ7wBh", "name": "alice"}],
        "u3": [{"presence_ref": "r3b"}],
    }
    # Once synced, diffs apply at once.
    assert summary(tracker.sync_diff({"leaves": {"u3": entry(meta("r3b"))}}, "1")) == [
        ("leave", "u3", [], ["r3b"]),
        ("sync", None, [], []),
    ]


def test_pr04_after_a_rejoin_diffs_wait_for_the_new_join_refs_state() -> None:
    """PR-04: after a rejoin with a new join_ref, diffs are buffered until its state arrives."""
    tracker = synced(join_ref="1")
    # The channel rejoined as join_ref "2"; its state has not arrived yet.
    assert tracker.sync_diff({"joins": {"u9": entry(meta("r9"))}}, "2") == []
    assert tracker.sync_diff({"leaves": {"u1": entry(meta("GEy9P7s0zaEQ7wBh"))}}, "2") == []
    assert tracker.pending_diffs == 2
    assert tracker.snapshot() == transform_state(STATE)  # untouched meanwhile

    events = tracker.sync_state({"u1": STATE["u1"]}, "2")
    assert summary(events) == [
        ("leave", "u2", [], ["GEy9QAbcd1234xyz"]),
        ("join", "u9", [], ["r9"]),
        ("leave", "u1", [], ["GEy9P7s0zaEQ7wBh"]),
        ("sync", None, [], []),
    ]
    assert tracker.snapshot() == {"u9": [{"presence_ref": "r9"}]}
    assert tracker.synced_join_ref == "2"


def test_pr04_buffer_is_bounded_and_counts_what_it_drops() -> None:
    """PR-04: the pending buffer keeps the newest diffs and counts the dropped ones."""
    tracker = PresenceTracker(max_pending_diffs=2)
    for ref in ("a", "b", "c"):
        tracker.sync_diff({"joins": {ref: entry(meta(ref))}}, "1")
    assert tracker.pending_diffs == 2
    assert tracker.dropped_diffs == 1
    tracker.sync_state({}, "1")
    assert sorted(tracker.snapshot()) == ["b", "c"]


def test_pr04_clear_forgets_state_and_pending_diffs() -> None:
    """PR-04: ``clear`` (channel left) reports leaves and drops pending diffs without applying."""
    tracker = synced(join_ref="1")
    tracker.sync_diff({"joins": {"u9": entry(meta("r9"))}}, "2")  # pending for join "2"
    events = tracker.clear()
    assert [(e.event, e.key) for e in events] == [("leave", "u1"), ("leave", "u2"), ("sync", None)]
    assert events[-1].state == {}
    assert tracker.snapshot() == {}
    assert tracker.pending_diffs == 0
    assert tracker.synced_join_ref is None
    # After clear, diffs wait for a state again.
    assert tracker.sync_diff({"joins": {"u1": entry(meta("x"))}}, "3") == []


# ---------------------------------------------------------------------------------------------
# PR-06: what is handed out is a copy.


def test_pr06_snapshot_is_a_deep_copy() -> None:
    """PR-06: mutating a snapshot (lists, metas, nested values) leaves the tracker alone."""
    tracker = synced(state={"u1": entry(meta("a", info={"tags": ["x"]}))})
    snapshot = tracker.snapshot()
    info: Any = snapshot["u1"][0]["info"]
    info["tags"].append("mutated")
    snapshot["u1"][0]["name"] = "mutated"
    snapshot["u1"].append({"presence_ref": "fake"})
    snapshot["u2"] = []
    assert tracker.snapshot() == {"u1": [{"presence_ref": "a", "info": {"tags": ["x"]}}]}


def test_pr06_event_payloads_are_copies() -> None:
    """PR-06: mutating the presences or state of emitted events leaves the tracker alone."""
    tracker = PresenceTracker()
    events = tracker.sync_state({"u1": entry(meta("a", info={"n": 1}))}, "1")
    join, sync = events
    info: Any = join.presences[0]["info"]
    info["n"] = 99
    join.presences.clear()
    assert sync.state is not None
    sync.state["u1"][0]["presence_ref"] = "mutated"
    sync.state.clear()
    events = tracker.sync_diff({"joins": {"u1": entry(meta("b"))}}, "1")
    events[0].current_presences[0]["presence_ref"] = "mutated"
    events[0].current_presences.clear()
    assert tracker.snapshot() == {
        "u1": [{"presence_ref": "a", "info": {"n": 1}}, {"presence_ref": "b"}]
    }


def test_pr06_state_is_independent_of_the_frame_payload() -> None:
    """PR-06: changing the synced payload's metas afterwards does not reach the state."""
    raw: dict[str, Any] = {"u1": entry(meta("a", name="alice"))}
    tracker = PresenceTracker()
    tracker.sync_state(raw, "1")
    raw["u1"]["metas"][0]["name"] = "mallory"
    raw["u1"]["metas"].append(meta("b"))
    assert tracker.snapshot() == {"u1": [{"presence_ref": "a", "name": "alice"}]}


# ---------------------------------------------------------------------------------------------
# Robustness: whatever the server sends, only ProtocolError.

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["u1", "u2", "metas", "phx_ref", "presence_ref", "joins", "leaves"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.tuples(st.booleans(), _JSON, st.sampled_from(["1", "2"])), min_size=1, max_size=6
    )
)
def test_pr02_pr03_tracker_accepts_any_input_or_raises_protocol_error(
    steps: list[tuple[bool, JSONValue, str]],
) -> None:
    """PR-02, PR-03: arbitrary payloads either apply or raise ProtocolError, nothing else."""
    tracker = PresenceTracker()
    for is_state, payload, join_ref in steps:
        try:
            if is_state:
                tracker.sync_state(payload, join_ref)
            else:
                tracker.sync_diff(payload, join_ref)
        except ProtocolError:
            pass
        state = tracker.snapshot()
        assert all(isinstance(metas, list) and metas for metas in state.values())


def test_pr02_state_replaces_in_the_servers_order() -> None:
    """PR-02: after a presence_state the state is exactly the server's, metas in its order,
    even when a key's metas were reached through buffered diffs first."""
    tracker = PresenceTracker()
    tracker.sync_state({"alice": {"metas": [{"phx_ref": "ref1"}]}}, "1")
    tracker.sync_diff({"joins": {"alice": {"metas": [{"phx_ref": "ref2"}]}}, "leaves": {}}, "2")
    tracker.sync_state({}, "2")
    assert tracker.snapshot() == {"alice": [{"presence_ref": "ref2"}]}
    tracker.sync_state({"alice": {"metas": [{"phx_ref": "ref1"}, {"phx_ref": "ref2"}]}}, "2")
    assert tracker.snapshot() == {"alice": [{"presence_ref": "ref1"}, {"presence_ref": "ref2"}]}


# -- HD-05: metas nested as deep as the parser accepts ---------------------------------------------

DEPTH = 1000  # orjson parses up to 1,024 levels; copy.deepcopy gives up near 300


def nested(levels: int, bottom: str = "bottom") -> JSONValue:
    value: JSONValue = bottom
    for _ in range(levels):
        value = {"d": value}
    return value


def depth_of(value: JSONValue) -> tuple[int, JSONValue]:
    """How many ``{"d": ...}`` levels ``value`` has, and what is at the bottom (no recursion)."""
    levels = 0
    while isinstance(value, dict):
        value = value["d"]
        levels += 1
    return levels, value


def test_hd05_deeply_nested_metas_keep_presence_working() -> None:
    """HD-05: a meta nested 1,000 levels deep joins, shows in the state, updates and leaves;
    every event and snapshot holds its own copy, and nothing raises."""
    tracker = PresenceTracker()
    deep = {"phx_ref": "r1", "nest": nested(DEPTH)}
    events = tracker.sync_state({"deep": {"metas": [deep]}, **STATE}, "1")
    join = next(e for e in events if e.event == "join" and e.key == "deep")
    assert depth_of(join.presences[0]["nest"]) == (DEPTH, "bottom")
    sync = events[-1]
    assert sync.event == "sync"
    assert sync.state is not None
    assert depth_of(sync.state["deep"][0]["nest"]) == (DEPTH, "bottom")
    snapshot = tracker.snapshot()
    assert depth_of(snapshot["deep"][0]["nest"]) == (DEPTH, "bottom")

    # Copies are independent: changing one, deep down, changes nothing else.
    bottom = join.presences[0]["nest"]
    for _ in range(DEPTH - 1):
        assert isinstance(bottom, dict)
        bottom = bottom["d"]
    assert isinstance(bottom, dict)
    bottom["d"] = "changed"
    assert depth_of(tracker.snapshot()["deep"][0]["nest"]) == (DEPTH, "bottom")
    assert depth_of(snapshot["deep"][0]["nest"]) == (DEPTH, "bottom")

    update = {"phx_ref": "r2", "phx_ref_prev": "r1", "nest": nested(DEPTH, "new")}
    events = tracker.sync_diff({"joins": {"deep": {"metas": [update]}}, "leaves": {}}, "1")
    assert [(e.event, e.key) for e in events] == [("join", "deep"), ("sync", None)]
    assert depth_of(events[0].current_presences[0]["nest"]) == (DEPTH, "bottom")
    events = tracker.sync_diff({"joins": {}, "leaves": {"deep": {"metas": [deep]}}}, "1")
    assert [(e.event, e.key) for e in events] == [("leave", "deep"), ("sync", None)]
    assert depth_of(events[0].current_presences[0]["nest"]) == (DEPTH, "new")
    assert depth_of(events[0].presences[0]["nest"]) == (DEPTH, "bottom")

    leaves = tracker.clear()
    assert sorted(str(e.key) for e in leaves if e.event == "leave") == ["deep", "u1", "u2"]
    assert tracker.snapshot() == {}


def test_hd05_deep_metas_in_lists_and_pending_diffs() -> None:
    """HD-05: nesting through lists too, in a diff held for a state that arrives later."""
    tracker = PresenceTracker()
    value: JSONValue = [1, "x", None]
    for _ in range(DEPTH):
        value = [value, {"k": True}]
    diff = {"joins": {"deep": {"metas": [{"phx_ref": "r1", "nest": value}]}}, "leaves": {}}
    assert tracker.sync_diff(diff, "2") == []
    events = tracker.sync_state({}, "2")
    assert [(e.event, e.key) for e in events] == [("join", "deep"), ("sync", None)]
    copied = tracker.snapshot()["deep"][0]["nest"]
    levels = 0
    while isinstance(copied, list) and len(copied) == 2:
        assert copied[1] == {"k": True}
        copied = copied[0]
        levels += 1
    assert (levels, copied) == (DEPTH, [1, "x", None])


def test_pr04_every_dropped_diff_is_counted() -> None:
    """PR-04: each diff pushed out of the full buffer adds one to ``dropped_diffs``."""
    tracker = PresenceTracker(max_pending_diffs=1)
    for ref in ("a", "b", "c", "d"):
        tracker.sync_diff({"joins": {ref: entry(meta(ref))}}, "1")
    assert tracker.dropped_diffs == 3
    assert tracker.pending_diffs == 1


@pytest.mark.parametrize("payload", [None, [], "x", 5])
def test_pr06_a_diff_that_is_not_an_object_says_so(payload: JSONValue) -> None:
    """PR-06: a ``presence_diff`` payload that is not an object is refused, saying why."""
    with pytest.raises(ProtocolError) as info:
        PresenceTracker().sync_diff(payload, "1")
    assert str(info.value) == "presence_diff payload must be an object"


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        3,
        2.5,
        "text",
        [],
        {},
        [1, [2, {"a": [3]}], {"b": {"c": None}}, "s"],
        {"a": [1, {"b": [2, [3]]}], "c": {"d": "e"}, "f": 1.5},
    ],
)
def test_hd05_copy_json_copies_every_container_at_every_level(value: JSONValue) -> None:
    """HD-05: ``copy_json`` returns an equal value that shares no list or dict with the
    original, scalars as they are."""
    copied = copy_json(value)
    assert copied == value
    assert type(copied) is type(value)
    originals: list[JSONValue] = [value]
    copies: list[JSONValue] = [copied]
    while originals:
        original, duplicate = originals.pop(), copies.pop()
        if isinstance(original, dict):
            assert isinstance(duplicate, dict)
            assert duplicate is not original
            assert list(duplicate) == list(original)  # key order kept
            originals.extend(original.values())
            copies.extend(duplicate.values())
        elif isinstance(original, list):
            assert isinstance(duplicate, list)
            assert duplicate is not original
            originals.extend(original)
            copies.extend(duplicate)
        else:
            assert duplicate is original


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "presence map must be an object, not list"),
        ({"k": {"metas": 3}}, "presence entry 'k' has no list of metas"),
        ({"k": {"metas": [5]}}, "presence meta for 'k' must be an object"),
        (
            {"k": {"metas": [{"phx_ref": [1]}]}},
            "presence meta for 'k' has a ref that is not a scalar",
        ),
    ],
)
def test_pr06_malformed_presence_maps_say_what_is_wrong(raw: JSONValue, message: str) -> None:
    """PR-06: each malformed shape is refused with its own message."""
    with pytest.raises(ProtocolError) as info:
        transform_state(raw)
    assert str(info.value) == message


def test_pr02_a_new_tracker_has_seen_no_state() -> None:
    """PR-02: before any state, no join_ref is synced, and a diff for any join waits."""
    tracker = PresenceTracker()
    assert tracker.synced_join_ref is None
    assert tracker.sync_diff({"joins": {"u1": entry(meta("r1"))}}, "") == []
    assert tracker.pending_diffs == 1


def test_pr03_a_leave_for_an_unknown_key_does_not_stop_the_others() -> None:
    """PR-03: leaves of keys we never saw are skipped; the leaves after them still apply."""
    tracker = synced(join_ref="1")
    diff = {"joins": {}, "leaves": {"ghost": entry(meta("g")), "u1": STATE["u1"]}}
    events = tracker.sync_diff(diff, "1")
    assert [(e.event, e.key) for e in events] == [("leave", "u1"), ("sync", None)]
    assert sorted(tracker.snapshot()) == ["u2"]
