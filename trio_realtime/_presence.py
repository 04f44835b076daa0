"""Presence state and the sync algorithm, as pure data structures.

Theory of operation
-------------------
The server sends a full ``presence_state`` right after each join, and ``presence_diff`` frames
(``joins`` and ``leaves``) after that. A diff can arrive before the state of the current join
(for example just after a rejoin): it is buffered and replayed, in order, once the state for
that join arrives. :class:`PresenceTracker` holds the state, the join_ref whose state it has
seen, and the pending diffs; its methods return the :class:`PresenceEvent` values the change
produced and never do I/O.

Metas are handed out as realtime-js does: ``metas`` unwrapped, ``phx_ref`` renamed to
``presence_ref``, ``phx_ref_prev`` dropped. Everything handed out is a copy, made by
:func:`copy_json` without recursion, so a meta nested as deep as the parser accepts (1,024
levels) is copied like any other (``copy.deepcopy`` gives up near 300).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, cast

from ._exceptions import ProtocolError
from ._frames import JSONObject, JSONValue

PresenceMeta: TypeAlias = JSONObject
"""One member's presence state, with ``presence_ref`` (the server's ``phx_ref``)."""

Meta: TypeAlias = PresenceMeta
PresenceMap: TypeAlias = dict[str, list[Meta]]

DEFAULT_MAX_PENDING_DIFFS = 1000
_PHX_REF_KEYS = frozenset({"phx_ref", "phx_ref_prev"})


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """One change of presence state.

    Attributes:
        event: ``"join"``, ``"leave"`` or ``"sync"``. A ``sync`` follows every state or diff
            that was applied, after its joins and leaves.
        key: The presence key that joined or left; ``None`` for ``sync``.
        current_presences: For ``join``, the key's metas before the join; for ``leave``, the
            metas that remain after it; for ``sync``, empty.
        presences: The metas that joined or left; for ``sync``, empty.
        state: For ``sync``, a copy of the whole state; otherwise ``None``.
    """

    event: Literal["join", "leave", "sync"]
    key: str | None
    current_presences: list[Meta] = field(default_factory=list)
    presences: list[Meta] = field(default_factory=list)
    state: PresenceMap | None = None


def transform_state(raw: object) -> PresenceMap:
    """Convert a server presence map (``{key: {"metas": [...]}}``) to the user-facing form.

    A key with an empty list of metas is left out: a key is present while it has metas.

    Raises:
        ProtocolError: when ``raw`` is not a map of keys to ``{"metas": [object, ...]}``, or a
            meta's ``phx_ref`` is a list or object (refs are compared, so they must be
            scalars).
    """
    if not isinstance(raw, dict):
        raise ProtocolError(f"presence map must be an object, not {type(raw).__name__}")
    state: PresenceMap = {}
    for key, entry in raw.items():
        metas = entry.get("metas") if isinstance(entry, dict) else entry
        if not isinstance(metas, list):
            raise ProtocolError(f"presence entry {key!r} has no list of metas")
        converted: list[Meta] = []
        for meta in metas:
            if not isinstance(meta, dict):
                raise ProtocolError(f"presence meta for {key!r} must be an object")
            item = {k: v for k, v in meta.items() if k not in _PHX_REF_KEYS}
            if "phx_ref" in meta:
                item["presence_ref"] = meta["phx_ref"]
            if isinstance(item.get("presence_ref"), list | dict):
                raise ProtocolError(f"presence meta for {key!r} has a ref that is not a scalar")
            converted.append(item)
        if converted:
            state[str(key)] = converted
    return state


def copy_json(value: JSONValue) -> JSONValue:
    """Return a deep copy of a JSON value (dicts, lists and scalars), at any depth.

    Works with an explicit stack rather than recursion; key order and list order are kept.
    """
    if type(value) is dict:
        root: JSONValue = {}
    elif type(value) is list:
        root = []
    else:
        return value
    stack: list[tuple[JSONValue, JSONValue]] = [(value, root)]
    pop = stack.pop
    push = stack.append
    while stack:
        source, target = pop()
        if type(source) is dict:
            target = cast(JSONObject, target)
            for key, item in source.items():
                kind = type(item)
                if kind is dict or kind is list:
                    child: JSONValue = {} if kind is dict else []
                    push((item, child))
                    target[key] = child
                else:
                    target[key] = item
        else:
            source, target = cast(list[JSONValue], source), cast(list[JSONValue], target)
            for item in source:
                kind = type(item)
                if kind is dict or kind is list:
                    child = {} if kind is dict else []
                    push((item, child))
                    target.append(child)
                else:
                    target.append(item)
    return root


def _copy_metas(metas: list[Meta]) -> list[Meta]:
    return [cast(Meta, copy_json(meta)) for meta in metas]


def _refs(metas: list[Meta]) -> set[JSONValue]:
    return {meta.get("presence_ref") for meta in metas}


class PresenceTracker:
    """Presence state of one channel, with pending diffs for a join whose state is not in yet.

    Args:
        max_pending_diffs: How many diffs to hold while waiting for the state. When more
            arrive, the oldest is dropped (the state that follows supersedes it) and counted in
            ``dropped_diffs``.
    """

    def __init__(self, *, max_pending_diffs: int = DEFAULT_MAX_PENDING_DIFFS) -> None:
        self._state: PresenceMap = {}
        self._synced_join_ref: str | None = None
        # A list, not a bounded deque: every channel has one, nearly always empty, and an
        # empty deque is about ten times the size of an empty list. Made by the first diff
        # that has to wait (an empty list is still an object the garbage collector scans).
        self._pending: list[tuple[PresenceMap, PresenceMap]] | None = None
        self._max_pending = max_pending_diffs
        self.dropped_diffs = 0

    def __repr__(self) -> str:
        return (
            f"<PresenceTracker keys={len(self._state)} synced_join_ref={self._synced_join_ref!r}"
            f" pending={self.pending_diffs}>"
        )

    @property
    def synced_join_ref(self) -> str | None:
        """The join_ref whose ``presence_state`` has been applied, if any."""
        return self._synced_join_ref

    @property
    def pending_diffs(self) -> int:
        """How many diffs wait for the state of the current join."""
        return len(self._pending or ())

    def snapshot(self) -> PresenceMap:
        """Return a deep copy of the state, ``{key: [meta, ...]}``."""
        return {key: _copy_metas(metas) for key, metas in self._state.items()}

    def clear(self) -> list[PresenceEvent]:
        """Forget all state (for example when the channel is left); return the leaves.

        Pending diffs are dropped, not applied.
        """
        self._pending = None
        return self.sync_state({}, None)

    def sync_state(self, raw_state: object, join_ref: str | None) -> list[PresenceEvent]:
        """Apply a ``presence_state`` received while the channel's join_ref is ``join_ref``.

        Members absent from the new state leave, new ones join, and the diffs buffered for this
        join are replayed in order.

        Raises:
            ProtocolError: when the payload is malformed; the state is unchanged then.
        """
        new_state = transform_state(raw_state)
        joins: PresenceMap = {}
        leaves: PresenceMap = {}
        for key, presences in self._state.items():
            if key not in new_state:
                leaves[key] = presences
        for key, new_presences in new_state.items():
            current = self._state.get(key)
            if current:
                current_refs = _refs(current)
                new_refs = _refs(new_presences)
                joined = [m for m in new_presences if m.get("presence_ref") not in current_refs]
                left = [m for m in current if m.get("presence_ref") not in new_refs]
                if joined:
                    joins[key] = joined
                if left:
                    leaves[key] = left
            else:
                joins[key] = new_presences
        events = self._apply(joins, leaves)
        # The state replaces ours exactly, in the server's order (applying the joins keeps
        # members that stayed ahead of new ones, as realtime-js does, which can reorder metas).
        self._state = {key: [dict(meta) for meta in metas] for key, metas in new_state.items()}
        self._synced_join_ref = join_ref
        pending, self._pending = self._pending or (), None
        for pending_joins, pending_leaves in pending:
            events.extend(self._apply(pending_joins, pending_leaves))
        events.append(self._sync_event())
        return events

    def sync_diff(self, raw_diff: object, join_ref: str | None) -> list[PresenceEvent]:
        """Apply a ``presence_diff``, or buffer it until the state for ``join_ref`` arrives.

        Returns:
            The events it produced: none when it was buffered.

        Raises:
            ProtocolError: when the payload is malformed; the state is unchanged then.
        """
        if not isinstance(raw_diff, dict):
            raise ProtocolError("presence_diff payload must be an object")
        joins = transform_state(raw_diff.get("joins") or {})
        leaves = transform_state(raw_diff.get("leaves") or {})
        if self._synced_join_ref is None or self._synced_join_ref != join_ref:
            pending = self._pending
            if pending is None:
                pending = self._pending = []
            pending.append((joins, leaves))
            if len(pending) > self._max_pending:
                del pending[0]  # the oldest: the state that follows supersedes it
                self.dropped_diffs += 1
            return []
        events = self._apply(joins, leaves)
        events.append(self._sync_event())
        return events

    def _apply(
        self, joins: Mapping[str, list[Meta]], leaves: Mapping[str, list[Meta]]
    ) -> list[PresenceEvent]:
        events: list[PresenceEvent] = []
        state = self._state
        for key, new_presences in joins.items():
            current = state.get(key, [])
            joined_refs = _refs(new_presences)
            kept = [m for m in current if m.get("presence_ref") not in joined_refs]
            state[key] = kept + [dict(m) for m in new_presences]
            events.append(
                PresenceEvent("join", key, _copy_metas(current), _copy_metas(new_presences))
            )
        for key, left_presences in leaves.items():
            before = state.get(key)
            if before is None:
                continue
            left_refs = _refs(left_presences)
            remaining = [m for m in before if m.get("presence_ref") not in left_refs]
            if remaining:
                state[key] = remaining
            else:
                del state[key]
            events.append(
                PresenceEvent("leave", key, _copy_metas(remaining), _copy_metas(left_presences))
            )
        return events

    def _sync_event(self) -> PresenceEvent:
        return PresenceEvent("sync", None, state=self.snapshot())
