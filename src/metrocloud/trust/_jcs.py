"""Internals of :mod:`metrocloud.trust.canonical`: the scan deciding the fast path.

``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` produces RFC 8785
output byte for byte when

* every string is valid Unicode (a lone surrogate fails the final UTF-8 encode),
* every number is an integer of the I-JSON range or a float whose Python ``repr`` is its
  ECMAScript ``Number::toString`` form (RFC 8785 §3.2.2.3), and
* no object key contains a character above U+FFFF: only then do code-point order (Python's
  ``sorted``) and UTF-16 code-unit order (RFC 8785 §3.2.3) agree.

Floats: a non-integral float with ``abs(f) >= 1e-4`` is printed by ``repr`` in fixed
notation with the shortest round-trip digits, exactly as ECMAScript does (every non-integral
double is below 2**52 < 1e16, so ``repr`` never switches to exponent notation). An integral
float below 2**53 prints as its integer (``20.0`` -> ``20``), so it is replaced by ``int``
before dumping. Any other float (``1e-5``, ``1e300``) sends the value to the ``rfc8785``
reference implementation.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

from metrocloud.domain.errors import InvalidInput

__all__ = [
    "FALLBACK",
    "INTEGRAL_FLOATS",
    "MAX_DEPTH",
    "MAX_SAFE_INTEGER",
    "has_non_bmp_key",
    "integral_floats_to_int",
    "invalid",
    "json_number_from_int_literal",
    "scan",
]

#: largest integer I-JSON (RFC 7493 §2.2) and therefore JCS can carry exactly
MAX_SAFE_INTEGER = 2**53 - 1
#: deepest nesting of arrays/objects accepted (protects the stack from hostile input)
MAX_DEPTH = 256

#: scan flag: the value holds integral floats that must be printed as integers
INTEGRAL_FLOATS = 1
#: scan flag: the value holds floats whose repr differs from ECMAScript; use rfc8785
FALLBACK = 2

_RULE_TYPES = "RFC 8785 §3.2"
_RULE_NUMBERS = "RFC 8785 §3.2.2.3"
_REPR_SAFE_MIN = 1e-4
_TWO_53 = float(2**53)


def scan(value: object) -> int:
    """Validate ``value`` against the JSON data model; return the flags it needs."""
    return _scan(value, 0, set(), None)


#: where a value sits, built cheaply while scanning and rendered only for error messages:
#: ``None`` for the root, else ``(parent, key or index)``
_Path = tuple[Any, str | int] | None


def _scan(value: object, depth: int, active: set[int], path: _Path) -> int:
    if isinstance(value, dict | list | tuple):
        return _scan_container(value, depth, active, path)
    return _scan_leaf(value, path)


def _scan_container(
    container: dict[Any, Any] | list[Any] | tuple[Any, ...],
    depth: int,
    active: set[int],
    path: _Path,
) -> int:
    if depth >= MAX_DEPTH:
        raise invalid(
            f"value at {_render(path)} is nested deeper than {MAX_DEPTH} levels", _RULE_TYPES
        )
    marker = id(container)
    if marker in active:
        raise invalid(
            f"value at {_render(path)} contains itself (circular reference); JSON is a tree",
            _RULE_TYPES,
        )
    active.add(marker)
    items: Any
    if isinstance(container, dict):
        for key in container:
            if not isinstance(key, str):
                _reject_key(key, path)
        items = container.items()
    else:
        items = enumerate(container)
    flags = 0
    for key, item in items:
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
        elif kind is float:
            flags |= _classify_float(item, (path, key))
            continue
        elif kind is dict or kind is list or kind is tuple:
            flags |= _scan_container(item, depth + 1, active, (path, key))
            continue
        flags |= _scan(item, depth + 1, active, (path, key))
    active.discard(marker)
    return flags


def _reject_key(key: object, path: _Path) -> NoReturn:
    raise invalid(
        f"object key {key!r} at {_render(path)} is of type {type(key).__name__}; "
        "JSON object keys must be strings",
        _RULE_TYPES,
    )


def _scan_leaf(value: object, path: _Path) -> int:
    if value is None or isinstance(value, str | bool):
        return 0
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return 0
        raise invalid(
            f"integer at {_render(path)} is outside the I-JSON range ±(2**53-1) and cannot be "
            f"represented exactly (found {_digits(value)}); send it as a string",
            "RFC 8785 §3.2.2.3, RFC 7493 §2.2",
        )
    if isinstance(value, float):
        return _classify_float(value, path)
    raise invalid(
        f"value at {_render(path)} is of type "
        f"{type(value).__module__}.{type(value).__qualname__}; "
        "JSON admits only dict, list, tuple, str, int, float, bool and None",
        _RULE_TYPES,
    )


def _classify_float(number: float, path: _Path) -> int:
    if math.isfinite(number):
        magnitude = abs(number)
        if number.is_integer():
            return INTEGRAL_FLOATS if magnitude < _TWO_53 else FALLBACK
        return 0 if magnitude >= _REPR_SAFE_MIN else FALLBACK
    raise invalid(
        f"number at {_render(path)} is {number!r}; NaN and Infinity are not JSON numbers",
        _RULE_NUMBERS,
    )


def json_number_from_int_literal(text: str) -> int | float:
    """``parse_int`` hook for ``json.loads``: read integer literals as I-JSON numbers.

    JSON numbers are IEEE 754 doubles (RFC 7493 §2.2). JCS prints an integral double such as
    ``1e20`` without exponent (``100000000000000000000``), which Python would read back as an
    ``int`` outside the safe range; reading it as a float makes parse + canonicalize a round
    trip again.
    """
    if len(text) <= 20:  # short enough to convert cheaply (and below int's digit limit)
        number = int(text)
        if -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
            return number
    return float(text)


def integral_floats_to_int(value: Any) -> Any:
    """Copy ``value`` with every integral float below 2**53 replaced by its ``int``."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < _TWO_53 else value
    if isinstance(value, dict):
        return {key: integral_floats_to_int(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [integral_floats_to_int(item) for item in value]
    return value


def has_non_bmp_key(value: Any) -> bool:
    """True when some object key holds a character above U+FFFF (a UTF-16 surrogate pair)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if any(ord(char) > 0xFFFF for char in key) or has_non_bmp_key(item):
                return True
        return False
    if isinstance(value, list | tuple):
        return any(has_non_bmp_key(item) for item in value)
    return False


def invalid(message: str, rule: str) -> InvalidInput:
    """An :class:`InvalidInput` whose message ends with the rule it cites."""
    return InvalidInput(f"{message} ({rule})", rule=rule)


def _render(path: _Path) -> str:
    """JSONPath-like location (``$.body.values[3]``) for error messages."""
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    text = "$"
    for key in reversed(keys):
        if isinstance(key, int):
            text += f"[{key}]"
        elif key.isidentifier():
            text += f".{key}"
        else:
            text += f"[{key!r}]"
    return text


def _digits(value: int) -> str:
    if value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} digits)"
