"""Signed node-to-node HTTP requests and responses. Pure, no I/O.

A request from node S to node R carries four headers::

    Metrocloud-Node:            S's node id
    Metrocloud-Node-Time:       Unix seconds when S sent it
    Metrocloud-Node-Nonce:      16 to 64 characters of base64url, fresh for every request
    Metrocloud-Node-Signature:  keyid=<64 hex>;alg=<alg>;sig=<base64>

The signature is S's node key over ``GRID_REQUEST_DOMAIN`` followed by the RFC 8785 canonical
JSON of ``{"from", "to", "method", "target", "body_sha256", "time", "nonce"}``: the method,
the path with its query, the SHA-256 of the exact body bytes, the time and the nonce, bound
to sender and receiver (a request signed for one node is worthless at another). The receiver
also refuses a time outside its clock-skew window and a nonce it has seen (replay; the
nonces are kept for the window, :mod:`metrocloud.grid.nonces`).

The answer carries ``Metrocloud-Node-Signature`` by R over ``GRID_RESPONSE_DOMAIN`` + the
canonical JSON of ``{"from": R, "to": S, "nonce": <the request's>, "status", "body_sha256"}``,
so S knows the answer is R's, to this very request.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from metrocloud.domain.errors import InvalidInput, MetrocloudError, VerificationError
from metrocloud.grid.errors import NodeUnauthenticated
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey, PublicKey
from metrocloud.trust.statements import Signature, parse_request_signature

__all__ = [
    "GRID_REQUEST_DOMAIN",
    "GRID_RESPONSE_DOMAIN",
    "NODE_HEADER",
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "TIME_HEADER",
    "RequestClaims",
    "new_nonce",
    "sign_request",
    "sign_response",
    "verify_request",
    "verify_response",
]

GRID_REQUEST_DOMAIN = b"metrocloud-grid-request-v1\x00"
GRID_RESPONSE_DOMAIN = b"metrocloud-grid-response-v1\x00"
NODE_HEADER = "Metrocloud-Node"
TIME_HEADER = "Metrocloud-Node-Time"
NONCE_HEADER = "Metrocloud-Node-Nonce"
SIGNATURE_HEADER = "Metrocloud-Node-Signature"
_RULE = "metrocloud grid request signature v1 (docs/grid.md#transport)"
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_NODE_ID = re.compile(r"^node-[A-Z]{2}-[0-9a-f]{16}$")
_TIME = re.compile(r"^[0-9]{1,12}$")


def new_nonce() -> str:
    """128 random bits, base64url without padding (22 characters)."""
    return secrets.token_urlsafe(16)


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestClaims:
    """What a node request asserts; :meth:`signed_bytes` is what the signature covers."""

    sender: str
    receiver: str
    method: str
    target: str  # path and query, exactly as sent
    body_sha256: str
    time: int
    nonce: str

    def signed_bytes(self) -> bytes:
        return GRID_REQUEST_DOMAIN + canonical_json(
            {
                "from": self.sender,
                "to": self.receiver,
                "method": self.method,
                "target": self.target,
                "body_sha256": self.body_sha256,
                "time": self.time,
                "nonce": self.nonce,
            }
        )


def sign_request(
    key: PrivateKey,
    *,
    sender: str,
    receiver: str,
    method: str,
    target: str,
    body: bytes,
    time: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four headers of a request from ``sender`` to ``receiver``."""
    nonce = nonce if nonce is not None else new_nonce()
    claims = RequestClaims(
        sender=sender,
        receiver=receiver,
        method=method.upper(),
        target=target,
        body_sha256=_digest(body),
        time=time,
        nonce=nonce,
    )
    sig = key.sign(claims.signed_bytes())
    return {
        NODE_HEADER: sender,
        TIME_HEADER: str(time),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: (
            f"keyid={key.key_id};alg={key.algorithm.value};sig={base64.b64encode(sig).decode()}"
        ),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name) or headers.get(name.lower())
    if not value:
        raise NodeUnauthenticated(
            f"a node-to-node request needs the headers {NODE_HEADER}, {TIME_HEADER}, "
            f"{NONCE_HEADER} and {SIGNATURE_HEADER}; {name} is missing",
            rule=_RULE,
        )
    return value


def verify_request(
    headers: Mapping[str, str],
    *,
    method: str,
    target: str,
    body: bytes,
    receiver: str,
    key_of: Callable[[str], PublicKey],
    now: int,
    max_skew: int,
) -> RequestClaims:
    """What the receiving node checks, in this order (each failure is 401):

    1. the four headers are present and well-formed;
    2. the sender is an admitted node: ``key_of`` returns its key (it checks the admission
       under the anchor, and raises for an unknown, removed or expired node);
    3. the time lies within ``max_skew`` seconds of ``now``;
    4. the signature is the sender's key over method, target, body digest, time, nonce,
       sender and this receiver.

    The nonce is returned for the caller's replay check (:mod:`metrocloud.grid.nonces`).
    """
    # (1): headers
    sender = _header(headers, NODE_HEADER)
    time_text = _header(headers, TIME_HEADER)
    nonce = _header(headers, NONCE_HEADER)
    sig_text = _header(headers, SIGNATURE_HEADER)
    if not _NODE_ID.match(sender):
        raise NodeUnauthenticated(
            f"{NODE_HEADER} must be a node id node-XX-<16 hex>, got {sender[:60]!r}", rule=_RULE
        )
    if not _TIME.match(time_text):
        raise NodeUnauthenticated(
            f"{TIME_HEADER} must be Unix seconds, got {time_text[:40]!r}", rule=_RULE
        )
    if not _NONCE.match(nonce):
        raise NodeUnauthenticated(
            f"{NONCE_HEADER} must be 16 to 64 base64url characters, got {nonce[:70]!r}",
            rule=_RULE,
        )
    try:
        signature: Signature = parse_request_signature(sig_text)
    except InvalidInput as exc:
        raise NodeUnauthenticated(f"{SIGNATURE_HEADER}: {exc}", rule=_RULE) from None
    # (2): an admitted node
    try:
        key = key_of(sender)
    except MetrocloudError as exc:
        raise NodeUnauthenticated(
            f"node {sender} is not admitted here: {exc}", rule=_RULE
        ) from None
    # (3): the clock-skew window
    sent = int(time_text)
    if abs(now - sent) > max_skew:
        raise NodeUnauthenticated(
            f"request time {sent} is {now - sent:+d} s from this node's clock ({now}); at most "
            f"{max_skew} s either way are accepted (setting grid_max_skew_s)",
            rule=_RULE,
        )
    # (4): the signature
    claims = RequestClaims(
        sender=sender,
        receiver=receiver,
        method=method.upper(),
        target=target,
        body_sha256=_digest(body),
        time=sent,
        nonce=nonce,
    )
    if signature.key_id != key.key_id:
        raise NodeUnauthenticated(
            f"request signed with key {signature.key_id[:16]}..., node {sender}'s admitted key "
            f"is {key.key_id[:16]}...",
            rule=_RULE,
        )
    try:
        key.verify(signature.sig, claims.signed_bytes())
    except VerificationError as exc:
        raise NodeUnauthenticated(
            f"node request signature of {sender} does not verify over {method} {target[:200]} "
            f"(body sha256 {claims.body_sha256[:16]}..., time {sent}, nonce {nonce}): {exc}",
            rule=_RULE,
        ) from None
    return claims


def _response_bytes(*, sender: str, receiver: str, nonce: str, status: int, body: bytes) -> bytes:
    return GRID_RESPONSE_DOMAIN + canonical_json(
        {
            "from": sender,
            "to": receiver,
            "nonce": nonce,
            "status": status,
            "body_sha256": _digest(body),
        }
    )


def sign_response(
    key: PrivateKey, *, sender: str, receiver: str, nonce: str, status: int, body: bytes
) -> str:
    """The ``Metrocloud-Node-Signature`` header of an answer to the request ``nonce``."""
    sig = key.sign(
        _response_bytes(sender=sender, receiver=receiver, nonce=nonce, status=status, body=body)
    )
    return f"keyid={key.key_id};alg={key.algorithm.value};sig={base64.b64encode(sig).decode()}"


def verify_response(
    header: str | None,
    key: PublicKey,
    *,
    sender: str,
    receiver: str,
    nonce: str,
    status: int,
    body: bytes,
) -> None:
    """Raise :class:`VerificationError` unless ``sender`` signed this answer to ``nonce``."""
    if not header:
        raise VerificationError(
            f"the answer of node {sender} carries no {SIGNATURE_HEADER}", rule=_RULE
        )
    try:
        signature = parse_request_signature(header)
    except InvalidInput as exc:
        raise VerificationError(f"answer of node {sender}: {exc}", rule=_RULE) from None
    if signature.key_id != key.key_id:
        raise VerificationError(
            f"answer of node {sender} signed with key {signature.key_id[:16]}..., its admitted "
            f"key is {key.key_id[:16]}...",
            rule=_RULE,
        )
    message = _response_bytes(
        sender=sender, receiver=receiver, nonce=nonce, status=status, body=body
    )
    try:
        key.verify(signature.sig, message)
    except VerificationError as exc:
        raise VerificationError(
            f"answer of node {sender} (status {status}) does not verify: {exc}", rule=_RULE
        ) from None
