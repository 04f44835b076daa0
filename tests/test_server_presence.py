"""LS-01: presence on the local server (PROTOCOL.md section 6), for vsn 1.0.0 and 2.0.0."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio
from server_support import VSNS, RawClient, config, connect, obj, reply_status

from trio_realtime.protocol import (
    Frame,
    JSONValue,
    presence_track_frame,
    presence_untrack_frame,
)
from trio_realtime.testing import RealtimeServer, serve_realtime

pytestmark = pytest.mark.parametrize("vsn", VSNS)

PHX_REF = re.compile(r"[A-Za-z0-9_-]{16}")


async def _member(
    server: RealtimeServer, vsn: str, nursery: trio.Nursery, key: str, *, enabled: bool = True
) -> tuple[RawClient, str | None]:
    client = await connect(server, vsn, nursery)
    joined = await client.join("room1", config=config(presence_key=key, presence_enabled=enabled))
    if enabled:
        state = await client.receive()
        assert state.event == "presence_state", state
    return client, joined.ref


async def _track(client: RawClient, join_ref: str | None, state: dict[str, JSONValue]) -> None:
    ref = client.next_ref()
    await client.send(presence_track_frame(ref, join_ref, "room1", state))
    reply = await client.receive()
    assert reply_status(reply) == ("ok", {})
    assert reply.ref == ref


def _metas(diff: Frame, side: str, key: str) -> list[dict[str, Any]]:
    assert diff.event == "presence_diff", diff
    return [obj(meta) for meta in obj(obj(diff.payload)[side])[key]["metas"]]


async def test_ls01_presence_state_only_when_enabled(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: presence_state follows the join reply only when presence is enabled."""
    async with serve_realtime() as server:
        enabled = await connect(server, vsn, nursery)
        joined = await enabled.join("room1", config=config(presence_enabled=True))
        state = await enabled.receive()
        assert (state.event, state.payload, state.ref) == ("presence_state", {}, None)
        assert state.join_ref == (joined.ref if vsn == "2.0.0" else None)

        disabled = await connect(server, vsn, nursery)
        await disabled.join("room1")
        await disabled.assert_silent()


async def test_ls01_track_retrack_untrack(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: track -> ok then diff to all; re-track carries phx_ref_prev; untrack leaves."""
    async with serve_realtime() as server:
        alice, alice_ref = await _member(server, vsn, nursery, "u1")
        bob, _ = await _member(server, vsn, nursery, "u2")

        await _track(alice, alice_ref, {"name": "alice"})
        for client in (alice, bob):
            diff = await client.receive()
            assert diff.join_ref is None
            (joined,) = _metas(diff, "joins", "u1")
            assert obj(diff.payload)["leaves"] == {}
        first_ref = joined["phx_ref"]
        assert isinstance(first_ref, str)
        assert PHX_REF.fullmatch(first_ref)
        assert joined == {"phx_ref": first_ref, "name": "alice"}

        await _track(alice, alice_ref, {"name": "alice"})  # same payload: no diff
        await alice.assert_silent()

        await _track(alice, alice_ref, {"name": "alice2"})
        diff = await bob.receive()
        assert await alice.receive() == diff
        (new,) = _metas(diff, "joins", "u1")
        (old,) = _metas(diff, "leaves", "u1")
        assert old == {"phx_ref": first_ref, "name": "alice"}
        assert new["phx_ref_prev"] == first_ref
        assert new["phx_ref"] != first_ref
        assert new["name"] == "alice2"
        assert server.presence_state("room1") == {"u1": {"metas": [new]}}

        ref = alice.next_ref()
        await alice.send(presence_untrack_frame(ref, alice_ref, "room1"))
        assert reply_status(await alice.receive()) == ("ok", {})
        assert (await alice.receive()).event == "presence_diff"
        diff = await bob.receive()
        assert _metas(diff, "leaves", "u1") == [new]
        assert obj(diff.payload)["joins"] == {}
        assert server.presence_state("room1") == {}


async def test_ls01_several_metas_per_key(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: two connections tracking the same key give one key with two metas."""
    async with serve_realtime() as server:
        first, first_ref = await _member(server, vsn, nursery, "shared")
        await _track(first, first_ref, {"tab": 1})
        await first.receive()
        second, second_ref = await _member(server, vsn, nursery, "shared")
        await _track(second, second_ref, {"tab": 2})

        newcomer = await connect(server, vsn, nursery)
        await newcomer.join("room1", config=config(presence_enabled=True))
        state = await newcomer.receive()
        assert state.event == "presence_state"
        metas = obj(state.payload)["shared"]["metas"]
        assert [meta["tab"] for meta in metas] == [1, 2]
        assert state.payload == server.presence_state("room1")


async def test_ls01_leaving_or_dropping_removes_presence(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: a leave or a dropped connection makes its presence leave."""
    async with serve_realtime() as server:
        watcher, _ = await _member(server, vsn, nursery, "w")
        leaver, leaver_ref = await _member(server, vsn, nursery, "l")
        dropper, dropper_ref = await _member(server, vsn, nursery, "d")
        await _track(leaver, leaver_ref, {"x": 1})
        assert (await dropper.receive()).event == "presence_diff"  # the leaver's join
        await _track(dropper, dropper_ref, {"x": 2})
        assert set(_metas(await watcher.receive(), "joins", "l")[0]) == {"phx_ref", "x"}
        assert _metas(await watcher.receive(), "joins", "d")[0]["x"] == 2

        await leaver.leave("room1", leaver_ref)
        assert _metas(await watcher.receive(), "leaves", "l")[0]["x"] == 1

        dropped = server.connections[2]
        assert await server.drop_connections(connection=dropped) == 1
        assert _metas(await watcher.receive(), "leaves", "d")[0]["x"] == 2
        assert server.presence_state("room1") == {}


async def test_ls01_first_track_enables_presence(
    vsn: str, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """LS-01: tracking on a channel joined without presence enables it; no presence_state."""
    async with serve_realtime() as server:
        client, join_ref = await _member(server, vsn, nursery, "k", enabled=False)
        await _track(client, join_ref, {"here": True})
        assert _metas(await client.receive(), "joins", "k")[0]["here"] is True
        await client.assert_silent()


async def test_ls01_presence_edge_cases(vsn: str, nursery: trio.Nursery) -> None:
    """LS-01: TRACK in any case; non-map payload refused; no event is ok; unknown is error."""
    async with serve_realtime() as server:
        client, join_ref = await _member(server, vsn, nursery, "k")

        async def push(body: JSONValue) -> Frame:
            await client.send(Frame("realtime:room1", "presence", body, "9", join_ref))
            return await client.receive()

        assert reply_status(await push({"event": "track", "payload": [1]})) == (
            "error",
            {"reason": "Presence track payload must be a map"},
        )
        assert reply_status(await push({"type": "presence"})) == ("ok", {})
        assert reply_status(await push({"event": "wave"})) == ("error", {})
        assert reply_status(await push({"event": "TRACK", "payload": {"a": 1}})) == ("ok", {})
        assert (await client.receive()).event == "presence_diff"
        assert reply_status(await push({"event": "track"})) == ("ok", {})  # payload {} by default
        assert _metas(await client.receive(), "joins", "k")[0].keys() == {"phx_ref", "phx_ref_prev"}
