"""PHP ``serialize()`` / ``unserialize()`` against outputs PHP itself produces (compat.md section 3).

Every expected string below is written out literally, as PHP >= 7.1 prints it
(``serialize_precision = -1``); none is computed by the code under test.
"""

from __future__ import annotations

import math

import pytest

from tokenmigration.formats.phpserialize import (
    PHP_INT_MAX,
    PHP_INT_MIN,
    PhpSerializeError,
    serialize,
    unserialize,
)

LOGIN_WEB_KEY = "login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d"
CSRF = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"


# --- scalars ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "N;"),
        (True, "b:1;"),
        (False, "b:0;"),
        (0, "i:0;"),
        (42, "i:42;"),
        (-7, "i:-7;"),
        (2**63 - 1, "i:9223372036854775807;"),
        (-(2**63), "i:-9223372036854775808;"),
    ],
    ids=repr,
)
def test_serialize_null_bool_int(value, expected):
    assert serialize(value) == expected


def test_php_int_limits_are_64_bit():
    assert PHP_INT_MAX == 9223372036854775807
    assert PHP_INT_MIN == -9223372036854775808


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_serialize_rejects_ints_php_cannot_hold(value):
    with pytest.raises(PhpSerializeError):
        serialize(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", 's:0:"";'),
        ("hello", 's:5:"hello";'),
        ("héllo", 's:6:"héllo";'),  # é is 2 bytes in UTF-8
        ("😀", 's:4:"😀";'),  # emoji: 4 bytes
        ("日本語", 's:9:"日本語";'),  # CJK: 3 bytes each
        ("a😀b日", 's:9:"a😀b日";'),
        ('say "hi"', 's:8:"say "hi"";'),  # PHP does not escape quotes
        ('a";b', 's:4:"a";b";'),
        ("line\nbreak", 's:10:"line\nbreak";'),
        ("nul\x00byte", 's:8:"nul\x00byte";'),
    ],
    ids=repr,
)
def test_serialize_string_lengths_are_utf8_bytes(value, expected):
    assert serialize(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.5, "d:1.5;"),
        (0.1, "d:0.1;"),
        (-2.25, "d:-2.25;"),
        (0.0, "d:0;"),
        (-0.0, "d:-0;"),
        (1.0, "d:1;"),
        (100.0, "d:100;"),
        (123456789.0, "d:123456789;"),
        (3.14, "d:3.14;"),
        (0.1 + 0.2, "d:0.30000000000000004;"),
        (1 / 3, "d:0.3333333333333333;"),
        (0.0001, "d:0.0001;"),
        (1e15, "d:1000000000000000;"),
        (1.23e20, "d:1.23E+20;"),
        (1.5e300, "d:1.5E+300;"),
        (math.inf, "d:INF;"),
        (-math.inf, "d:-INF;"),
        (math.nan, "d:NAN;"),
    ],
    ids=repr,
)
def test_serialize_floats_like_php(value, expected):
    assert serialize(value) == expected


# PHP (php_gcvt, mode 0, 17 digits) switches to exponent form only when the
# decimal exponent is > 17 or < -4, always writes a fraction digit ("1.0E+17")
# and never zero-pads the exponent ("1.0E-5"). Python's repr() differs on all
# three points. Not used by session payloads, but the module claims to be PHP's
# serialize(); see the report.
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e16, "d:10000000000000000;"),
        (1e17, "d:1.0E+17;"),
        (1e20, "d:1.0E+20;"),
        (1e100, "d:1.0E+100;"),
        (1e-5, "d:1.0E-5;"),
        (1e-7, "d:1.0E-7;"),
        (9.99e-5, "d:9.99E-5;"),
        (1.5e-7, "d:1.5E-7;"),
    ],
    ids=repr,
)
def test_serialize_float_exponent_form_like_php(value, expected):
    assert serialize(value) == expected


# --- arrays ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], "a:0:{}"),
        ({}, "a:0:{}"),
        (["a", "b"], 'a:2:{i:0;s:1:"a";i:1;s:1:"b";}'),
        (("a", "b"), 'a:2:{i:0;s:1:"a";i:1;s:1:"b";}'),
        ([None, True, 3, 1.5], "a:4:{i:0;N;i:1;b:1;i:2;i:3;i:3;d:1.5;}"),
        ({"a": 1, "b": "x"}, 'a:2:{s:1:"a";i:1;s:1:"b";s:1:"x";}'),
        ({5: "five", "é": [1]}, 'a:2:{i:5;s:4:"five";s:2:"é";a:1:{i:0;i:1;}}'),
        (
            {"user": {"id": 7, "roles": ["admin", "dev"]}, "ok": True},
            'a:2:{s:4:"user";a:2:{s:2:"id";i:7;s:5:"roles";a:2:{i:0;s:5:"admin";i:1;s:3:"dev";}}'
            's:2:"ok";b:1;}',
        ),
        ([[], [[]]], "a:2:{i:0;a:0:{}i:1;a:1:{i:0;a:0:{}}}"),
    ],
    ids=repr,
)
def test_serialize_arrays(value, expected):
    assert serialize(value) == expected


@pytest.mark.parametrize(
    ("key", "expected_key"),
    [
        ("7", "i:7;"),  # integer-like string keys become ints in PHP arrays
        ("0", "i:0;"),
        ("123456", "i:123456;"),
        ("9223372036854775807", "i:9223372036854775807;"),
        ("07", 's:2:"07";'),  # leading zero: stays a string
        ("00", 's:2:"00";'),
        ("9223372036854775808", 's:19:"9223372036854775808";'),  # beyond PHP_INT_MAX
        ("-0", 's:2:"-0";'),
        ("+7", 's:2:"+7";'),
        (" 7", 's:2:" 7";'),
        ("7 ", 's:2:"7 ";'),
        ("1.5", 's:3:"1.5";'),
        ("", 's:0:"";'),
        ("abc", 's:3:"abc";'),
        (7, "i:7;"),
        (-3, "i:-3;"),
        (True, "i:1;"),
        (False, "i:0;"),
    ],
    ids=repr,
)
def test_serialize_array_keys_are_cast_like_php(key, expected_key):
    assert serialize({key: "x"}) == f'a:1:{{{expected_key}s:1:"x";}}'


def test_serialize_negative_integer_like_string_key_becomes_int():
    assert serialize({"-5": 1}) == "a:1:{i:-5;i:1;}"


@pytest.mark.parametrize(("key", "expected"), [("٣", 'a:1:{s:2:"٣";i:1;}'), ("²", 'a:1:{s:2:"²";i:1;}')])
def test_serialize_non_ascii_digit_keys_stay_strings(key, expected):
    assert serialize({key: 1}) == expected


@pytest.mark.parametrize("value", [{1.5: "x"}, {None: "x"}, {(1, 2): "x"}])
def test_serialize_rejects_keys_php_arrays_cannot_have(value):
    with pytest.raises(PhpSerializeError):
        serialize(value)


@pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes", 1j])
def test_serialize_rejects_unsupported_types(value):
    with pytest.raises(PhpSerializeError):
        serialize(value)


def test_laravel_session_payload_shape():
    attributes = {"_token": CSRF, LOGIN_WEB_KEY: 42}
    assert serialize(attributes) == (
        'a:2:{s:6:"_token";s:40:"aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d";'
        's:50:"login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d";i:42;}'
    )


# --- unserialize -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("N;", None),
        ("b:1;", True),
        ("b:0;", False),
        ("i:42;", 42),
        ("i:-9223372036854775808;", -(2**63)),
        ("d:1.5;", 1.5),
        ("d:0.1;", 0.1),
        ("d:1;", 1.0),
        ("d:1.0E+25;", 1e25),
        ("d:1.0E-5;", 1e-5),
        ("d:-INF;", -math.inf),
        ('s:6:"héllo";', "héllo"),
        ('s:4:"😀";', "😀"),
        ('s:9:"日本語";', "日本語"),
        ('s:4:"a";b";', 'a";b'),
        ("a:0:{}", {}),
        ('a:2:{i:0;s:1:"a";i:1;s:1:"b";}', {0: "a", 1: "b"}),
        ('a:1:{s:2:"07";i:1;}', {"07": 1}),
        (
            'a:2:{s:6:"_token";s:40:"aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d";'
            's:50:"login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d";i:42;}',
            {"_token": CSRF, LOGIN_WEB_KEY: 42},
        ),
        # A session as Laravel itself writes it after a login and one page view.
        (
            'a:4:{s:6:"_token";s:40:"aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d";'
            's:9:"_previous";a:1:{s:3:"url";s:21:"http://localhost/home";}'
            's:6:"_flash";a:2:{s:3:"old";a:0:{}s:3:"new";a:0:{}}'
            's:50:"login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d";i:1;}',
            {
                "_token": CSRF,
                "_previous": {"url": "http://localhost/home"},
                "_flash": {"old": {}, "new": {}},
                LOGIN_WEB_KEY: 1,
            },
        ),
    ],
    ids=repr,
)
def test_unserialize_php_output(text, expected):
    result = unserialize(text)
    assert result == expected
    assert type(result) is type(expected)


def test_unserialize_accepts_bytes():
    assert unserialize('s:6:"héllo";'.encode()) == "héllo"


def test_unserialize_nan():
    assert math.isnan(unserialize("d:NAN;"))


def test_unserialize_keeps_int_and_str_key_types():
    result = unserialize('a:2:{i:7;s:1:"x";s:1:"7";s:1:"y";}')
    assert result == {7: "x", "7": "y"}
    assert [type(k) for k in result] == [int, str]


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        1.5,
        0.1,
        -0.0,
        1 / 3,
        math.inf,
        "",
        "héllo",
        "😀 and 日本語",
        'tricky ";} s:1:"x";',
        "x" * 10_000,
        {},
        {"_token": CSRF, LOGIN_WEB_KEY: 42},
        {"a": {"b": {"c": {0: None, 1: {}}}}},
        {"07": "leading zero", 7: "int", "-0": "minus zero", "é": "key with é"},
    ],
    ids=lambda v: repr(v)[:40],
)
def test_round_trip(value):
    result = unserialize(serialize(value))
    assert result == value
    assert type(result) is type(value)
    assert serialize(result) == serialize(value)


def test_round_trip_nested_list_becomes_int_keyed_dicts():
    assert unserialize(serialize({"a": {"b": [None, ["x"]]}})) == {"a": {"b": {0: None, 1: {0: "x"}}}}


def test_round_trip_list_becomes_int_keyed_dict():
    assert unserialize(serialize(["a", "b", None])) == {0: "a", 1: "b", 2: None}


def test_round_trip_integer_like_string_key_becomes_int():
    assert unserialize(serialize({"7": "x", "07": "y"})) == {7: "x", "07": "y"}


@pytest.mark.parametrize(
    "text",
    [
        's:5:"héllo";',  # character count instead of byte count
        's:7:"héllo";',
        's:4:"hello";',
        's:6:"hello";',
        's:5:"hello"',  # missing ';'
        's:5:hello;',  # missing quotes
    ],
)
def test_unserialize_rejects_wrong_string_length(text):
    with pytest.raises(PhpSerializeError):
        unserialize(text)


@pytest.mark.parametrize(
    "text",
    ["i:1;i:2;", "N;x", "N;N;", 'a:0:{}}', 's:1:"a";;', "b:1; ", 'a:1:{i:0;i:1;}\n'],
    ids=repr,
)
def test_unserialize_rejects_trailing_data(text):
    with pytest.raises(PhpSerializeError, match="trailing data"):
        unserialize(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "N",
        "i:1",
        "b:2;",
        "b:;",
        "a:1:{i:0;",  # truncated
        "a:2:{i:0;i:1;}",  # fewer entries than announced
        "a:1:{i:0;i:1;i:1;i:2;}",  # more entries than announced
        "a:1:i:0;i:1;}",  # missing '{'
        "a:1:{N;i:1;}",  # null key
        "a:1:{a:0:{}i:1;}",  # array key
        'O:8:"stdClass":0:{}',  # objects are never accepted
        "x:1;",
    ],
    ids=repr,
)
def test_unserialize_rejects_malformed_data(text):
    with pytest.raises(PhpSerializeError):
        unserialize(text)


@pytest.mark.parametrize("text", ['s:-1:";', "a:-1:{}"])
def test_unserialize_rejects_negative_lengths(text):
    with pytest.raises(PhpSerializeError):
        unserialize(text)
