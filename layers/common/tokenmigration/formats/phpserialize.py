"""PHP ``serialize()`` / ``unserialize()`` for the values Laravel sessions hold.

Only what session attribute arrays need: null, bool, int, float, str, list and
dict. String lengths are UTF-8 *byte* lengths, as PHP counts them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

PHP_INT_MAX = 2**63 - 1
PHP_INT_MIN = -(2**63)
# ZEND_HANDLE_NUMERIC_STR: the string keys PHP stores as integer keys ("-0" and "07" stay strings).
_INTEGER_KEY = re.compile(r"(?:0|-?[1-9][0-9]*)\Z", re.ASCII)
# serialize_precision = -1 picks the shortest round-trip digits and switches to exponent form
# outside 1e-4 <= |x| < 1e17 (php_gcvt with precision 17).
_PHP_GCVT_PRECISION = 17


class PhpSerializeError(ValueError):
    pass


def _encode_str(value: str) -> str:
    return f's:{len(value.encode("utf-8"))}:"{value}";'


def _encode_key(key: Any) -> str:
    # PHP casts integer-like string keys to ints ("7" becomes 7), and bool keys to ints.
    if isinstance(key, bool):
        return f"i:{int(key)};"
    if isinstance(key, int):
        return f"i:{key};"
    if isinstance(key, str):
        if _INTEGER_KEY.match(key) and PHP_INT_MIN <= int(key) <= PHP_INT_MAX:
            return f"i:{key};"
        return _encode_str(key)
    raise PhpSerializeError(f"PHP array keys must be int or str, not {type(key).__name__}")


def serialize(value: Any) -> str:
    """Return ``serialize($value)`` as PHP would produce it."""
    if value is None:
        return "N;"
    if isinstance(value, bool):
        return f"b:{int(value)};"
    if isinstance(value, int):
        if not PHP_INT_MIN <= value <= PHP_INT_MAX:
            raise PhpSerializeError(f"integer {value} does not fit a PHP int")
        return f"i:{value};"
    if isinstance(value, float):
        return f"d:{_php_float(value)};"
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, Mapping):
        body = "".join(_encode_key(k) + serialize(v) for k, v in value.items())
        return f"a:{len(value)}:{{{body}}}"
    if isinstance(value, list | tuple):
        body = "".join(f"i:{i};" + serialize(v) for i, v in enumerate(value))
        return f"a:{len(value)}:{{{body}}}"
    raise PhpSerializeError(f"cannot serialize {type(value).__name__}")


def _php_float(value: float) -> str:
    if value != value:
        return "NAN"
    if value in (float("inf"), float("-inf")):
        return "INF" if value > 0 else "-INF"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    magnitude = len(digits) + exponent - 1  # decimal exponent of the first digit
    minus = "-" if sign else ""
    if text != "0" and (magnitude < -4 or magnitude >= _PHP_GCVT_PRECISION):
        mantissa = text[0] + "." + (text[1:] or "0")
        return f"{minus}{mantissa}E{'+' if magnitude >= 0 else '-'}{abs(magnitude)}"
    fixed = format(Decimal(repr(value)), "f")
    if "." in fixed:
        fixed = fixed.rstrip("0").rstrip(".")
    return fixed


def unserialize(data: str | bytes) -> Any:
    """Parse PHP serialized data; PHP arrays come back as dicts."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    value, end = _parse(raw, 0)
    if end != len(raw):
        raise PhpSerializeError(f"trailing data at byte {end}")
    return value


def _read_until(raw: bytes, pos: int, stop: bytes) -> tuple[bytes, int]:
    end = raw.find(stop, pos)
    if end < 0:
        raise PhpSerializeError(f"expected {stop!r} after byte {pos}")
    return raw[pos:end], end + 1


def _length(text: bytes) -> int:
    if not text.isdigit():
        raise PhpSerializeError(f"bad length {text!r}")
    return int(text)


def _parse(raw: bytes, pos: int) -> tuple[Any, int]:
    if pos + 1 >= len(raw):
        raise PhpSerializeError("unexpected end of data")
    tag = raw[pos : pos + 2]
    if tag == b"N;":
        return None, pos + 2
    if tag == b"b:":
        text, pos = _read_until(raw, pos + 2, b";")
        if text not in (b"0", b"1"):
            raise PhpSerializeError(f"bad bool {text!r}")
        return text == b"1", pos
    if tag == b"i:":
        text, pos = _read_until(raw, pos + 2, b";")
        return int(text), pos
    if tag == b"d:":
        text, pos = _read_until(raw, pos + 2, b";")
        return float(text.decode().replace("INF", "inf").replace("NAN", "nan")), pos
    if tag == b"s:":
        text, pos = _read_until(raw, pos + 2, b":")
        length = _length(text)
        if raw[pos : pos + 1] != b'"' or raw[pos + 1 + length : pos + 3 + length] != b'";':
            raise PhpSerializeError(f"string length {length} does not match the data at byte {pos}")
        return raw[pos + 1 : pos + 1 + length].decode("utf-8"), pos + 3 + length
    if tag == b"a:":
        text, pos = _read_until(raw, pos + 2, b":")
        count = _length(text)
        if raw[pos : pos + 1] != b"{":
            raise PhpSerializeError(f"expected '{{' at byte {pos}")
        pos += 1
        result: dict[Any, Any] = {}
        for _ in range(count):
            key, pos = _parse(raw, pos)
            if not isinstance(key, int | str):
                raise PhpSerializeError("array keys must be int or string")
            result[key], pos = _parse(raw, pos)
        if raw[pos : pos + 1] != b"}":
            raise PhpSerializeError(f"expected '}}' at byte {pos}")
        return result, pos + 1
    raise PhpSerializeError(f"unsupported type tag {tag!r} at byte {pos}")
