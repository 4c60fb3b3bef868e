"""Laravel database-session rows (compat.md section 3): ids, payloads, plain columns."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re

import pytest

from tokenmigration.formats import phpserialize
from tokenmigration.formats.laravel_session import (
    BATCH_PREFIX_LENGTH,
    CSRF_TOKEN_LENGTH,
    IP_ADDRESS_MAX,
    LOGIN_WEB_KEY,
    SESSION_ID_LENGTH,
    USER_AGENT_MAX,
    PayloadFactory,
    clean_ip,
    clean_user_agent,
    decode_payload,
    encode_payload,
    is_valid_session_id,
    login_key,
    new_session_ids,
    new_session_ids_for_batch,
    serialize_attributes,
    session_attributes,
)

ALNUM_40 = re.compile(r"[A-Za-z0-9]{40}")
LOGIN_WEB_LITERAL = "login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d"
CSRF = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
USER_IDS = [0, 1, 2, 7, 9, 10, 42, 99, 100, 12345, 987654321, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1]


def php_base64_decode_once(payload: str) -> bytes:
    """What DatabaseSessionHandler::read does: base64_decode, exactly once."""
    return base64.b64decode(payload, validate=True)


# --- the login key ---------------------------------------------------------------------------------


def test_login_web_key_literal():
    assert LOGIN_WEB_KEY == LOGIN_WEB_LITERAL


def test_login_web_key_is_sha1_of_session_guard_class():
    digest = hashlib.sha1(b"Illuminate\\Auth\\SessionGuard").hexdigest()
    assert digest == "59ba36addc2b2f9401580f014c7f58ea4e30989d"
    assert "login_web_" + digest == LOGIN_WEB_KEY
    assert len(LOGIN_WEB_KEY) == 50


@pytest.mark.parametrize(
    ("guard", "expected"),
    [
        ("web", LOGIN_WEB_LITERAL),
        ("admin", "login_admin_59ba36addc2b2f9401580f014c7f58ea4e30989d"),
    ],
)
def test_login_key_for_other_guards(guard, expected):
    assert login_key(guard) == expected


def test_login_key_defaults_to_web_guard():
    assert login_key() == LOGIN_WEB_LITERAL


# --- session ids -----------------------------------------------------------------------------------


def test_constants_match_laravel():
    assert SESSION_ID_LENGTH == 40
    assert CSRF_TOKEN_LENGTH == 40
    assert IP_ADDRESS_MAX == 45
    assert USER_AGENT_MAX == 500


def test_new_session_ids_are_40_alnum_and_valid():
    ids = new_session_ids(2_000)
    assert len(ids) == 2_000
    for session_id in ids:
        assert ALNUM_40.fullmatch(session_id), session_id
        assert is_valid_session_id(session_id)


def test_new_session_ids_are_distinct():
    ids = new_session_ids(10_000)
    assert len(set(ids)) == len(ids)


def test_new_session_ids_zero():
    assert new_session_ids(0) == []


def test_a_batch_of_session_ids_shares_a_random_prefix_and_nothing_else():
    """A chunk's ids land together in sessions_pkey; each is still a Laravel id with 32 random characters."""
    batch, other = new_session_ids_for_batch(4_000), new_session_ids_for_batch(4_000)
    assert all(ALNUM_40.fullmatch(i) and is_valid_session_id(i) for i in batch + other)
    assert len({i[:BATCH_PREFIX_LENGTH] for i in batch}) == 1 and batch[0][:8] != other[0][:8]
    assert len(set(batch)) == len(batch)
    suffixes = [i[BATCH_PREFIX_LENGTH:] for i in batch]
    # every position of the suffix takes (nearly) all 62 characters: random, not a counter
    assert all(len({s[k] for s in suffixes}) >= 60 for k in range(SESSION_ID_LENGTH - BATCH_PREFIX_LENGTH))
    assert sorted(batch) != batch  # unsorted: sorted inserts would split index pages half-empty
    assert new_session_ids_for_batch(0) == []


@pytest.mark.parametrize(
    "session_id",
    [
        "A" * 40,
        "0" * 40,
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN",
        "0123456789012345678901234567890123456789",
    ],
)
def test_is_valid_session_id_accepts_40_alnum(session_id):
    assert is_valid_session_id(session_id)


@pytest.mark.parametrize(
    "session_id",
    [
        hashlib.sha256(b"the original PHP sketch").hexdigest(),  # 64 hex chars: never works
        "a" * 64,
        "a" * 39,
        "a" * 41,
        "",
        "a" * 39 + "-",
        "a" * 39 + "_",
        "a" * 39 + " ",
        "a" * 39 + ".",
        "a" * 39 + "\n",
        "a" * 39 + "é",  # alphanumeric, but not ASCII (ctype_alnum says no)
        "a" * 39 + "٣",  # Arabic-Indic digit
        "ａ" * 40,  # fullwidth letters
        "a" * 20 + "/" + "a" * 19,
        "a" * 20 + "+" + "a" * 19,
    ],
    ids=repr,
)
def test_is_valid_session_id_rejects(session_id):
    assert not is_valid_session_id(session_id)


def test_64_char_hex_id_has_the_wrong_length():
    session_id = hashlib.sha256(b"x").hexdigest()
    assert len(session_id) == 64
    assert not is_valid_session_id(session_id)


# --- attributes and payloads -----------------------------------------------------------------------


def test_session_attributes_shape():
    assert session_attributes(42, CSRF) == {"_token": CSRF, LOGIN_WEB_LITERAL: 42}


def test_no_password_hash_attribute():
    attributes = session_attributes(42, CSRF)
    assert not any("password_hash" in key for key in attributes)
    for serialization in ("php", "json"):
        assert "password_hash" not in serialize_attributes(attributes, serialization)
        text = php_base64_decode_once(PayloadFactory(serialization).payload(42, CSRF)).decode()
        assert "password_hash" not in text


def test_php_payload_literal():
    payload = encode_payload(session_attributes(42, CSRF), "php")
    assert php_base64_decode_once(payload) == (
        b'a:2:{s:6:"_token";s:40:"aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d";'
        b's:50:"login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d";i:42;}'
    )


def test_json_payload_literal():
    payload = encode_payload(session_attributes(42, CSRF), "json")
    assert php_base64_decode_once(payload) == (
        b'{"_token":"aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d",'
        b'"login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d":42}'
    )


def test_encode_payload_defaults_to_php():
    attributes = session_attributes(5, CSRF)
    assert encode_payload(attributes) == encode_payload(attributes, "php")
    assert php_base64_decode_once(encode_payload(attributes)).startswith(b"a:2:{")


def test_payload_factory_defaults_to_php():
    assert PayloadFactory().payload(5, CSRF) == PayloadFactory("php").payload(5, CSRF)


@pytest.mark.parametrize("user_id", USER_IDS)
def test_php_payload_factory_matches_general_encoder(user_id):
    factory = PayloadFactory("php")
    payload = factory.payload(user_id, CSRF)
    assert payload == encode_payload(session_attributes(user_id, CSRF), "php")

    raw = php_base64_decode_once(payload)
    assert raw == (
        f'a:2:{{s:6:"_token";s:40:"{CSRF}";s:50:"{LOGIN_WEB_LITERAL}";i:{user_id};}}'.encode("ascii")
    )
    attributes = phpserialize.unserialize(raw)
    assert attributes == {"_token": CSRF, LOGIN_WEB_LITERAL: user_id}
    assert type(attributes[LOGIN_WEB_LITERAL]) is int
    assert decode_payload(payload, "php") == attributes


@pytest.mark.parametrize("user_id", USER_IDS)
def test_json_payload_factory_matches_general_encoder(user_id):
    factory = PayloadFactory("json")
    payload = factory.payload(user_id, CSRF)
    assert payload == encode_payload(session_attributes(user_id, CSRF), "json")

    raw = php_base64_decode_once(payload)
    attributes = json.loads(raw)
    assert attributes == {"_token": CSRF, LOGIN_WEB_LITERAL: user_id}
    assert type(attributes[LOGIN_WEB_LITERAL]) is int
    assert decode_payload(payload, "json") == attributes


@pytest.mark.parametrize("serialization", ["php", "json"])
def test_payload_is_base64_exactly_once(serialization):
    payload = PayloadFactory(serialization).payload(42, CSRF)
    raw = php_base64_decode_once(payload)
    # Decoded once, it is already the serialized array; it is not base64 again.
    assert raw[:1] in (b"a", b"{")
    with pytest.raises(binascii.Error):
        base64.b64decode(raw, validate=True)
    # Standard alphabet with padding, as PHP's base64_encode writes it.
    assert re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", payload)
    assert len(payload) % 4 == 0


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"url": "http://localhost/home"}, '{"url":"http:\\/\\/localhost\\/home"}'),
        ({"a/b": "c"}, '{"a\\/b":"c"}'),
        ({"name": "héllo"}, '{"name":"h\\u00e9llo"}'),
        ({"emoji": "😀"}, '{"emoji":"\\ud83d\\ude00"}'),
        ({"n": None, "t": True, "i": 1}, '{"n":null,"t":true,"i":1}'),
    ],
)
def test_json_serialization_escapes_like_php_json_encode(attributes, expected):
    assert serialize_attributes(attributes, "json") == expected
    assert json.loads(expected) == attributes


def test_json_serialization_with_slash_in_csrf_decodes_back():
    attributes = session_attributes(3, "a/b" * 13 + "c")
    payload = encode_payload(attributes, "json")
    assert b"\\/" in php_base64_decode_once(payload)
    assert decode_payload(payload, "json") == attributes


@pytest.mark.parametrize("serialization", ["php", "json"])
def test_payloads_for_many_users(serialization):
    factory = PayloadFactory(serialization)
    user_ids = [0, 1, 2, 42, 2**40, 2**63 - 1, *range(1000, 1500)]
    payloads = factory.payloads(user_ids)
    assert len(payloads) == len(user_ids)

    tokens = []
    for user_id, payload in zip(user_ids, payloads, strict=True):
        attributes = decode_payload(payload, serialization)
        assert set(attributes) == {"_token", LOGIN_WEB_LITERAL}
        assert attributes[LOGIN_WEB_LITERAL] == user_id
        assert type(attributes[LOGIN_WEB_LITERAL]) is int
        token = attributes["_token"]
        assert ALNUM_40.fullmatch(token), token
        assert payload == encode_payload(session_attributes(user_id, token), serialization)
        tokens.append(token)
    assert len(set(tokens)) == len(tokens)


def test_payloads_draw_fresh_csrf_tokens_on_each_call():
    factory = PayloadFactory("php")
    first = decode_payload(factory.payloads([1])[0])["_token"]
    second = decode_payload(factory.payloads([1])[0])["_token"]
    assert first != second


def test_payloads_empty():
    assert PayloadFactory("php").payloads([]) == []


@pytest.mark.parametrize("serialization", ["php", "json"])
def test_decode_payload_round_trip_of_richer_session(serialization):
    attributes = {
        "_token": CSRF,
        "_previous": {"url": "http://localhost/home"},
        "_flash": {"old": [], "new": []},
        LOGIN_WEB_LITERAL: 1,
    }
    decoded = decode_payload(encode_payload(attributes, serialization), serialization)
    assert decoded["_token"] == CSRF
    assert decoded["_previous"] == {"url": "http://localhost/home"}
    assert decoded[LOGIN_WEB_LITERAL] == 1


@pytest.mark.parametrize("serialization", ["php", "json"])
def test_decode_payload_rejects_non_array(serialization):
    text = "i:1;" if serialization == "php" else "1"
    with pytest.raises(ValueError):
        decode_payload(base64.b64encode(text.encode()).decode(), serialization)


def test_decode_payload_rejects_non_base64():
    with pytest.raises(ValueError):
        decode_payload("not base64 at all!")


# --- plain columns ---------------------------------------------------------------------------------

IPV6_45 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"


@pytest.mark.parametrize(
    "value",
    ["127.0.0.1", "::1", "2001:db8::1", IPV6_45, "x" * 45],
)
def test_clean_ip_keeps_values_that_fit(value):
    assert clean_ip(value) == value


def test_ipv6_literal_is_45_chars():
    assert len(IPV6_45) == 45


@pytest.mark.parametrize("value", ["x" * 46, IPV6_45 + "0", "1" * 1000, "", None, 127001, b"127.0.0.1"])
def test_clean_ip_drops_what_does_not_fit(value):
    assert clean_ip(value) is None


@pytest.mark.parametrize("length", [1, 100, 499, 500])
def test_clean_user_agent_keeps_short_values(length):
    value = "M" * length
    assert clean_user_agent(value) == value


@pytest.mark.parametrize("length", [501, 502, 1000, 100_000])
def test_clean_user_agent_truncates_to_500_chars(length):
    value = "".join(chr(ord("a") + i % 26) for i in range(length))
    cleaned = clean_user_agent(value)
    assert cleaned == value[:500]
    assert len(cleaned) == 500


def test_clean_user_agent_counts_characters_not_bytes():
    cleaned = clean_user_agent("é" * 600)
    assert cleaned == "é" * 500


@pytest.mark.parametrize("value", ["", None, 42, b"Mozilla/5.0"])
def test_clean_user_agent_drops_non_text(value):
    assert clean_user_agent(value) is None


# PayloadFactory.payload() splices the token into a frame cut for a 40-char
# alphanumeric one ('s:40:' is baked in, JSON escaping is skipped), so it must
# refuse anything else rather than build a payload Laravel cannot read.
@pytest.mark.parametrize(
    ("serialization", "csrf"),
    [("php", "short"), ("php", "x" * 41), ("json", "a/b" * 13 + "c"), ("php", "é" * 40), ("json", "x" * 39 + "!")],
    ids=repr,
)
def test_payload_factory_refuses_a_csrf_token_its_frame_was_not_cut_for(serialization, csrf):
    with pytest.raises(ValueError, match="csrf_token must be 40 ASCII letters or digits"):
        PayloadFactory(serialization).payload(1, csrf)


@pytest.mark.parametrize("user_id", [True, "1", 1.0, None])
def test_payload_factory_refuses_a_user_id_that_is_not_an_int(user_id):
    with pytest.raises(ValueError, match="user_id must be an int"):
        PayloadFactory("php").payload(user_id, "a" * 40)


@pytest.mark.parametrize("serialization", ["php", "json"])
def test_payload_factory_matches_the_general_encoder_for_a_40_char_token(serialization):
    csrf = "Ab3" * 13 + "Z"
    assert PayloadFactory(serialization).payload(7, csrf) == encode_payload(session_attributes(7, csrf), serialization)


# A header holds no control characters and PostgreSQL's text holds no NUL; the chunk SQL separates values
# with two of them, so none may survive cleaning (engine.writers._free_text checks the same).
@pytest.mark.parametrize(
    ("value", "cleaned"),
    [
        ("Mozilla/5.0\x00 (X11)", "Mozilla/5.0 (X11)"),
        ("a\x1fb\x1ec\td\r\ne\x7f", "abcde"),
        ("broken \ud800 surrogate", "broken \ufffd surrogate"),
        ("\x00\x1f", None),
        ("Safari, \"quoted\" \\ back", "Safari, \"quoted\" \\ back"),
        ("line\u2028separator é 𝄞", "line\u2028separator é 𝄞"),
    ],
    ids=repr,
)
def test_clean_user_agent_removes_what_no_header_holds(value, cleaned):
    assert clean_user_agent(value) == cleaned


@pytest.mark.parametrize("value", ["127.0.0.1\x00", "::1\x1f", "\x1e", "10.0.0.1\n", "\udcff"], ids=repr)
def test_clean_ip_drops_control_characters_and_surrogates(value):
    assert clean_ip(value) is None
