"""Checks of user input at the call that receives it (HD-04).

Whatever a user passes ends up in a frame, often one a background task builds later (a rejoin,
a re-track after a reconnect). A value that cannot be sent must therefore be refused where it
was given, with an error naming the argument, and never reach those tasks: a lone surrogate
(``"\\ud800"``, which UTF-8 cannot encode), a value of the wrong type, an empty name, or a JSON
value orjson cannot encode.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from ._frames import JSONValue


def check_text(value: object, name: str, *, empty: bool = False) -> str:
    """Return ``value`` if it is a string that can be sent.

    Args:
        value: The argument.
        name: Its name, for the error message.
        empty: Whether the empty string is allowed.

    Raises:
        TypeError: for anything but a ``str``.
        ValueError: for an empty string (unless allowed) or one UTF-8 cannot encode.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    if not value and not empty:
        raise ValueError(f"{name} must not be empty")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError(f"{name} is not valid text (it has a lone surrogate)") from None
    return value


def encode_json(value: object, name: str) -> bytes:
    """Encode ``value`` as the JSON a frame would carry, or say which argument is at fault.

    Raises:
        ValueError: for text UTF-8 cannot encode, an integer beyond 64 bits, or nesting too
            deep (or circular).
        TypeError: for a value JSON cannot hold (a set, an object...) or a non-string key.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        detail = str(exc)
        if "surrogates" in detail:
            raise ValueError(f"{name} is not valid text (it has a lone surrogate)") from None
        if "64-bit" in detail or "ecursion" in detail:
            raise ValueError(f"{name} cannot be sent as JSON: {detail}") from None
        raise TypeError(f"{name} cannot be sent as JSON: {detail}") from None


def check_json(value: object, name: str) -> None:
    """Check that ``value`` can be sent as JSON; see :func:`encode_json`."""
    encode_json(value, name)


def copy_json_object(value: object, name: str) -> dict[str, JSONValue]:
    """Return a deep copy of the mapping ``value`` as plain JSON, checked for sending.

    The copy shares nothing with ``value``, so changing ``value`` afterwards cannot make a
    later resend (the presence re-track after a rejoin) fail.

    Raises:
        TypeError: for a value that is not a mapping, or as :func:`encode_json`.
        ValueError: as :func:`encode_json`.
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, not {type(value).__name__}")
    copied = orjson.loads(encode_json(dict(value), name))
    assert isinstance(copied, dict)
    return copied
