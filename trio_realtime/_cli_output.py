"""How ``trio-realtime listen`` prints events: readable lines, or one JSON object per line.

:func:`describe` turns each item a subscription yields (and each connection event) into a
:class:`Line`, which holds both forms; :class:`Printer` writes the one asked for. In JSON, every
object has ``type`` (``broadcast``, ``postgres_changes``, ``presence``, ``system``, ``channel``
(``joined``, ``join_failed``, or ``closed`` when the server closed it), ``connection``, ``dropped``
or ``notice``) and ``time`` (UTC, ISO 8601); a binary broadcast's
payload is base64 text, marked by ``"payload_encoding": "base64"``. Readable lines escape
control characters, so that a payload cannot drive the terminal.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import orjson

from ._events import (
    Broadcast,
    ChannelJoined,
    ChannelJoinFailed,
    Connected,
    Disconnected,
    RateLimitReached,
    Reconnecting,
    SystemMessage,
)
from ._frames import Payload
from ._postgres import PostgresChange
from ._presence import PresenceEvent


def dumps(value: object) -> str:
    """Compact JSON text (big integers, which orjson refuses, through the json module)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=str)


def use_colour(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether to colour ``stream``: a terminal, and ``NO_COLOR`` unset or empty."""
    if environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# C0 and C1 control characters (escape sequences, newlines), shown escaped in readable lines.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}

_STYLES: Mapping[str, str] = {
    "dim": "2",
    "bold": "1",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}


@dataclass(frozen=True, slots=True)
class Line:
    """One event, ready to print.

    Attributes:
        kind: The JSON ``type`` field, for example ``"broadcast"``.
        label: The readable form's first column, for example ``"INSERT"``.
        text: The rest of the readable line.
        record: The JSON object's other fields.
        style: The label's colour (a key of ``_STYLES``).
    """

    kind: str
    label: str
    text: str
    record: dict[str, object]
    style: str


def _payload_fields(payload: Payload) -> dict[str, object]:
    """``payload``, with bytes as base64 and a ``payload_encoding`` marker."""
    if isinstance(payload, bytes):
        return {"payload": base64.b64encode(payload).decode(), "payload_encoding": "base64"}
    return {"payload": payload}


def _payload_text(payload: Payload) -> str:
    if isinstance(payload, bytes):
        return f"<{len(payload)} bytes, base64 {base64.b64encode(payload).decode()}>"
    return dumps(payload)


def describe(item: object, topic: str) -> Line:
    """Turn one subscription item (or a connection event) into a :class:`Line`.

    Raises:
        TypeError: for an item of no known kind.
    """
    match item:
        case Broadcast(event=event, payload=payload, meta=meta):
            record: dict[str, object] = {"topic": topic, "event": event}
            record.update(_payload_fields(payload))
            if meta is not None:
                record["meta"] = meta
            return Line(
                "broadcast", "broadcast", f"{event} {_payload_text(payload)}", record, "cyan"
            )
        case PostgresChange():
            return _describe_change(item, topic)
        case PresenceEvent():
            return _describe_presence(item, topic)
        case SystemMessage(extension=extension, status=status, message=message):
            record = {"topic": topic, "extension": extension, "status": status, "message": message}
            style = "blue" if status == "ok" else "red"
            return Line("system", "system", f"{extension} {status}: {message}", record, style)
        case ChannelJoined(topic=channel, join_ref=join_ref, rejoin=rejoin):
            record = {"topic": channel, "event": "joined", "join_ref": join_ref, "rejoin": rejoin}
            if rejoin:
                text = f"{channel} again; events sent while it was not joined were missed"
                return Line("channel", "rejoined", text, record, "yellow")
            return Line("channel", "joined", channel, record, "bold")
        case ChannelJoinFailed(topic=channel, reason=reason, attempt=attempt, retry_in=retry):
            record = {
                "topic": channel,
                "event": "join_failed",
                "reason": reason,
                "attempt": attempt,
                "retry_in": retry,
            }
            then = f"retrying in {retry:.1f} s" if retry is not None else "not retrying"
            text = f"{channel}: {reason} (attempt {attempt}, {then})"
            return Line("channel", "join failed", text, record, "red")
        case Connected(url=url, reconnect=reconnect):
            record = {"event": "connected", "url": url, "reconnect": reconnect}
            text = url + (" (reconnected)" if reconnect else "")
            return Line("connection", "connected", text, record, "green")
        case Disconnected(code=code, reason=reason, will_reconnect=again):
            record = {
                "event": "disconnected",
                "code": code,
                "reason": reason,
                "will_reconnect": again,
            }
            text = f"code {code}" + (f": {reason}" if reason else "")
            text += "; reconnecting" if again else "; not reconnecting"
            return Line("connection", "disconnected", text, record, "red")
        case Reconnecting(attempt=attempt, delay=delay):
            record = {"event": "reconnecting", "attempt": attempt, "delay": round(delay, 3)}
            return Line(
                "connection",
                "reconnecting",
                f"attempt {attempt} in {delay:.1f} s",
                record,
                "yellow",
            )
        case RateLimitReached(topic=where, reason=reason, limit=limit):
            record = {"event": "rate_limited", "topic": where, "limit": limit, "reason": reason}
            text = f"{where or 'connection'}: {reason}"
            return Line("connection", "rate limited", text, record, "red")
    raise TypeError(f"cannot describe {type(item).__name__}")


def _describe_change(change: PostgresChange, topic: str) -> Line:
    record: dict[str, object] = {
        "topic": topic,
        "event_type": change.event_type,
        "schema": change.schema,
        "table": change.table,
        "commit_timestamp": change.commit_timestamp,
        "new": change.new,
        "old": change.old,
        "columns": change.columns,
        "errors": change.errors,
    }
    parts = [f"{change.schema}.{change.table}"]
    if change.event_type != "DELETE":
        parts.append(dumps(change.new))
    if change.old:
        parts.append(f"old {dumps(change.old)}")
    if change.errors:
        parts.append(f"errors {dumps(change.errors)}")
    return Line("postgres_changes", change.event_type or "change", " ".join(parts), record, "green")


def _describe_presence(event: PresenceEvent, topic: str) -> Line:
    record: dict[str, object] = {"topic": topic, "event": event.event}
    if event.event == "sync":
        state = event.state or {}
        record["state"] = state
        keys = ", ".join(sorted(state))
        text = f"{len(state)} online: {keys}" if state else "nobody online"
        return Line("presence", "presence", text, record, "magenta")
    record["key"] = event.key
    record["presences"] = event.presences
    record["current_presences"] = event.current_presences
    verb = "joined" if event.event == "join" else "left"
    text = f"{event.key} {verb} {dumps(event.presences)}"
    return Line("presence", "presence", text, record, "magenta")


class Printer:
    """Writes ``listen``'s lines: JSON objects, or readable lines coloured on a terminal.

    Every line is flushed at once, so that a pipe (``| jq``) sees events as they arrive.
    """

    def __init__(self, stream: TextIO, *, json_lines: bool, colour: bool) -> None:
        self._stream = stream
        self._json = json_lines
        self._colour = colour

    @property
    def json_lines(self) -> bool:
        """Whether lines are JSON objects."""
        return self._json

    def _paint(self, text: str, style: str) -> str:
        return f"\x1b[{_STYLES[style]}m{text}\x1b[0m" if self._colour else text

    def show(self, line: Line) -> None:
        """Print ``line``."""
        now = datetime.now(UTC)
        if self._json:
            stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            text = dumps({"type": line.kind, "time": stamp, **line.record})
        else:
            clock = now.astimezone().strftime("%H:%M:%S.%f")[:-3]
            label = self._paint(f"{line.label:<12}", line.style)
            text = f"{self._paint(clock, 'dim')} {label} {line.text.translate(_CONTROL)}"
        self._stream.write(text + "\n")
        self._stream.flush()
