"""JWT verification as the Realtime server does it, with its error strings.

The server peeks at the claims and the header first (both must be JSON objects, else the token
is "not a valid JWT"), builds a signer only for ``typ: JWT`` with an ``HS256``/``HS384``/
``HS512`` ``alg`` (anything else is a signer error), verifies the signature, checks ``exp``, and
finally requires both ``role`` and ``exp``. Signatures are checked with PyJWT.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning

from .._frames import JSONObject

HS_ALGORITHMS = ("HS256", "HS384", "HS512")

NOT_A_JWT = "The token provided is not a valid JWT"
BAD_SIGNATURE = "Failed to validate JWT signature"
SIGNER_ERROR = "Failed to generate JWT signer, check your JWT secret or JWKS configuration"
MISSING_FIELDS = "Fields `role` and `exp` are required in JWT"
EXPIRED = "Token has expired"


@dataclass(frozen=True, slots=True)
class TokenError(Exception):
    """A token the server refuses.

    Attributes:
        code: The code a refused join's reason starts with (``InvalidJWTToken``, ...).
        message: The message, as the channel reports it (``Token has expired 3 seconds ago``).
        connect_message: The message an HTTP 401 at connect carries (``Token has expired``).
    """

    code: str
    message: str
    connect_message: str

    def __str__(self) -> str:
        return self.message

    @property
    def reason(self) -> str:
        """The join error reason, ``"<code>: <message>"``."""
        return f"{self.code}: {self.message}"


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("MalformedJWT", NOT_A_JWT, NOT_A_JWT) from None
    if not isinstance(claims, dict) or not isinstance(header, dict):
        raise TokenError("MalformedJWT", NOT_A_JWT, NOT_A_JWT)
    return claims, header


def verify_token(token: object, secret: str, *, now: float | None = None) -> JSONObject:
    """Verify ``token`` with the HS* ``secret`` and return its claims.

    Args:
        token: The token as received (anything that is not a string is not a valid JWT).
        secret: The shared secret.
        now: The Unix time to check ``exp`` against; defaults to the wall clock.

    Raises:
        TokenError: with the server's code and messages.
    """
    if not isinstance(token, str) or not token:
        raise TokenError("MalformedJWT", NOT_A_JWT, NOT_A_JWT)
    claims, header = _peek(token)
    alg = header.get("alg")
    if header.get("typ") != "JWT" or alg not in HS_ALGORITHMS:
        raise TokenError("JwtSignerError", SIGNER_ERROR, SIGNER_ERROR)
    try:
        with warnings.catch_warnings():
            # The real server accepts any secret length; so does this one, without a warning.
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            jwt.decode(
                token,
                secret,
                algorithms=[alg],
                options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
            )
    except jwt.InvalidSignatureError:
        raise TokenError("JwtSignatureError", BAD_SIGNATURE, BAD_SIGNATURE) from None
    except jwt.PyJWTError:
        raise TokenError("MalformedJWT", NOT_A_JWT, NOT_A_JWT) from None
    moment = time.time() if now is None else now
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool) and exp <= moment:
        ago = math.floor(moment - exp)
        raise TokenError("InvalidJWTToken", f"{EXPIRED} {ago} seconds ago", EXPIRED)
    if "role" not in claims or "exp" not in claims:
        raise TokenError("InvalidJWTToken", MISSING_FIELDS, MISSING_FIELDS)
    return claims


def unverified_claims(token: str | None) -> JSONObject:
    """Return the claims of ``token`` without checking it; ``{}`` when it is not a JWT."""
    if not token:
        return {}
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def make_token(
    secret: str,
    *,
    role: str = "authenticated",
    sub: str | None = None,
    expires_in: float = 3600.0,
    now: float | None = None,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """Sign a Supabase-style access token: ``role``, ``exp`` and ``sub`` plus ``claims``.

    Args:
        secret: The server's ``jwt_secret``.
        role: The Postgres role the token's RLS checks run as.
        sub: The user id ``auth.uid()`` returns, when given.
        expires_in: Seconds until ``exp`` (negative for an expired token).
        now: The Unix time to count from; defaults to the wall clock.
        algorithm: ``HS256``, ``HS384`` or ``HS512``.
        **claims: Further claims (``email``, ``app_metadata``, ...).
    """
    moment = time.time() if now is None else now
    body: dict[str, Any] = {"role": role, "exp": int(moment + expires_in), **claims}
    if sub is not None:
        body["sub"] = sub
    return jwt.encode(body, secret, algorithm=algorithm, headers={"typ": "JWT"})


def token_check_for(
    secret: str, clock: Callable[[], float] = time.time
) -> Callable[[str], str | None]:
    """Return a ``TokenCheck`` that verifies channel tokens with ``secret``, checking ``exp``
    against ``clock()`` (Unix seconds)."""

    def check(token: str) -> str | None:
        try:
            verify_token(token, secret, now=clock())
        except TokenError as exc:
            return exc.message
        return None

    return check
