"""Laravel's session cookie: written as EncryptCookies/Encrypter write it, read back by a port of Laravel's reader.

The port (``read_session_cookie``/``decrypt``) follows Laravel's code step by step; an independent check
decrypts our ciphertext with the openssl command line, the library PHP's ``openssl_decrypt`` wraps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
from urllib.parse import unquote, unquote_plus

import pytest

from tokenmigration.config import ConfigError, Settings
from tokenmigration.formats import laravel_cookie as lc

KEY = bytes(range(32))
APP_KEY = "base64:" + base64.b64encode(KEY).decode()
OLD_KEY = bytes(range(100, 132))
NAME = "laravel_session"
SESSION_ID = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCd"


def payload_of(wire: str) -> dict:
    return json.loads(base64.b64decode(unquote(wire)))


def rebuild(document: dict) -> str:
    return lc.url_encode(base64.b64encode(json.dumps(document).encode()).decode())


# --- the key ---------------------------------------------------------------------------------------


def test_app_key_forms():
    assert lc.parse_app_key(APP_KEY) == KEY
    assert lc.parse_app_key("  " + APP_KEY + "\n") == KEY
    assert lc.parse_app_key("x" * 32) == b"x" * 32  # a raw 32-character APP_KEY is used as it is
    assert lc.parse_app_key(KEY) == KEY


@pytest.mark.parametrize("raw", [
    "base64:" + base64.b64encode(b"k" * 16).decode(),  # AES-128 key: not AES-256-CBC
    "base64:" + base64.b64encode(b"k" * 33).decode(),
    "base64:not base64!",
    "short",
    "",
])
def test_bad_app_keys_name_the_variable_and_not_the_key(raw):
    with pytest.raises(ConfigError, match="LARAVEL_APP_KEY") as raised:
        lc.parse_app_key(raw)
    if raw.strip():
        assert raw.removeprefix("base64:") not in str(raised.value)


# --- writing ---------------------------------------------------------------------------------------


def test_prefix_is_hmac_sha1_of_the_cookie_name_and_v2():
    expected = hmac.new(KEY, b"laravel_sessionv2", hashlib.sha1).hexdigest() + "|"
    assert lc.cookie_value_prefix(NAME, APP_KEY) == expected
    assert len(expected) == lc.PREFIX_LENGTH


def test_payload_shape_and_mac():
    wire = lc.session_cookie_value(NAME, SESSION_ID, APP_KEY)
    assert set(wire) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~%")
    document = payload_of(wire)
    assert list(document) == ["iv", "value", "mac", "tag"] and document["tag"] == ""
    assert len(base64.b64decode(document["iv"], validate=True)) == 16
    assert len(base64.b64decode(document["value"], validate=True)) % 16 == 0
    mac = hmac.new(KEY, (document["iv"] + document["value"]).encode(), hashlib.sha256).hexdigest()
    assert document["mac"] == mac
    # JSON_UNESCAPED_SLASHES: no "\/" in the JSON text
    assert "\\/" not in base64.b64decode(unquote(wire)).decode()


def test_every_cookie_gets_a_fresh_iv():
    first, second = (payload_of(lc.session_cookie_value(NAME, SESSION_ID, APP_KEY)) for _ in range(2))
    assert first["iv"] != second["iv"] and first["value"] != second["value"]


def test_openssl_decrypts_what_we_encrypt():
    """The library behind PHP's openssl_decrypt, run as a separate program, reads our ciphertext.

    No skip without the ``openssl`` command: CI installs it, and a machine without it fails here, loudly.
    """
    assert shutil.which("openssl"), "this test needs the openssl command (Debian: apt-get install openssl)"
    document = payload_of(lc.session_cookie_value(NAME, SESSION_ID, APP_KEY))
    iv = base64.b64decode(document["iv"])
    out = subprocess.run(
        ["openssl", "enc", "-d", "-aes-256-cbc", "-K", KEY.hex(), "-iv", iv.hex(), "-a", "-A"],
        input=document["value"].encode(), capture_output=True, check=True,
    ).stdout
    assert out.decode() == lc.cookie_value_prefix(NAME, KEY) + SESSION_ID


def test_set_cookie_header():
    header = lc.set_cookie_header(NAME, "v%2B", max_age=7200, secure=True, domain=".example.com", now=0)
    assert header == ("laravel_session=v%2B; Expires=Thu, 01 Jan 1970 02:00:00 GMT; Max-Age=7200; Path=/; "
                      "Domain=.example.com; Secure; HttpOnly; SameSite=Lax")
    plain = lc.set_cookie_header(NAME, "v", max_age=60, secure=False)
    assert "Secure" not in plain and "Domain=" not in plain and "HttpOnly" in plain and "SameSite=Lax" in plain


@pytest.mark.parametrize("name", ["", "bad name", "a;b", "a=b", "é"])
def test_cookie_names_must_be_tokens(name):
    with pytest.raises(ConfigError, match="LARAVEL_SESSION_COOKIE"):
        lc.set_cookie_header(name, "v", max_age=60)


# --- reading: the port of Laravel -------------------------------------------------------------------


def test_round_trip_through_laravels_reader():
    wire = lc.session_cookie_value(NAME, SESSION_ID, APP_KEY)
    assert lc.read_session_cookie(NAME, wire, APP_KEY) == SESSION_ID
    assert lc.decrypt(unquote_plus(wire), [KEY]).decode() == lc.cookie_value_prefix(NAME, KEY) + SESSION_ID


def test_url_encoding_is_rawurlencode():
    # PHP urldecode()s $_COOKIE, turning '+' into a space: everything outside A-Za-z0-9-_.~ is encoded.
    assert lc.url_encode("a+b/c=d~e") == "a%2Bb%2Fc%3Dd~e"
    for n in range(64):  # base64 of the ASCII JSON payload: padding '=' is what needs encoding in practice
        raw = lc.encrypt(lc.cookie_value_prefix(NAME, KEY) + SESSION_ID + "x" * n, KEY)
        wire = lc.encrypt_cookie_value(lc.cookie_value_prefix(NAME, KEY) + SESSION_ID + "x" * n, KEY)
        assert "=" not in wire and unquote_plus(wire).rstrip("=") == wire.split("%3D")[0]
        assert len(raw) == len(unquote_plus(wire))


def test_previous_keys_decrypt_and_validate_the_prefix():
    wire = lc.session_cookie_value(NAME, SESSION_ID, OLD_KEY)
    assert lc.read_session_cookie(NAME, wire, [KEY]) is None
    assert lc.read_session_cookie(NAME, wire, [KEY, OLD_KEY]) == SESSION_ID


def test_prefix_of_another_cookie_name_is_refused():
    wire = lc.session_cookie_value("other_cookie", SESSION_ID, APP_KEY)
    assert lc.decrypt(unquote_plus(wire), [KEY])  # decrypts fine ...
    assert lc.read_session_cookie(NAME, wire, APP_KEY) is None  # ... but CookieValuePrefix::validate says no


def test_validate_prefix_strips_exactly_the_prefix():
    assert lc.validate_prefix(NAME, lc.cookie_value_prefix(NAME, KEY) + "x|y", [KEY]) == "x|y"
    assert lc.validate_prefix(NAME, "0" * 40 + "|" + SESSION_ID, [KEY]) is None


def _wire_payload() -> dict:
    return payload_of(lc.session_cookie_value(NAME, SESSION_ID, APP_KEY))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(mac="0" * 64), "The MAC is invalid."),
    (lambda d: d.update(value=base64.b64encode(b"x" * 32).decode()), "The MAC is invalid."),
    (lambda d: d.update(tag="abc"), "AEAD"),
    (lambda d: d.update(iv=base64.b64encode(b"x" * 12).decode()), "The payload is invalid."),
    (lambda d: d.update(iv=5), "The payload is invalid."),
    (lambda d: d.pop("mac"), "The payload is invalid."),
    (lambda d: d.update(tag=["x"]), "The payload is invalid."),
])
def test_tampered_payloads_are_refused(change, message):
    document = _wire_payload()
    change(document)
    with pytest.raises(lc.DecryptException, match=message):
        lc.decrypt(unquote_plus(rebuild(document)), [KEY])
    assert lc.read_session_cookie(NAME, rebuild(document), APP_KEY) is None


def test_bad_padding_under_a_valid_mac_is_refused():
    document = _wire_payload()
    iv = base64.b64decode(document["iv"])
    # A block that decrypts to garbage padding: re-MAC it so only the padding check can refuse it.
    value = base64.b64encode(bytes(16)).decode()
    document.update(value=value, mac=hmac.new(KEY, (document["iv"] + value).encode(), hashlib.sha256).hexdigest())
    assert iv  # unchanged
    with pytest.raises(lc.DecryptException, match="Could not decrypt"):
        lc.decrypt(unquote_plus(rebuild(document)), [KEY])


@pytest.mark.parametrize("wire", ["", "not-base64-json", base64.b64encode(b"[1,2]").decode(),
                                  base64.b64encode(b'{"iv": null}').decode()])
def test_garbage_is_no_cookie(wire):
    assert lc.read_session_cookie(NAME, wire, APP_KEY) is None


@pytest.mark.parametrize(("data", "strict", "expected"), [
    ("QUJD", False, b"ABC"),
    ("QU JD\n", True, b"ABC"),
    ("QUI=", True, b"AB"),
    ("QUI", True, b"AB"),  # PHP accepts missing padding
    ("QUI==", True, None),  # wrong padding
    ("QU=I", True, None),  # data after padding
    ("QUJDR", True, None),  # a lone trailing character
    ("QUJDR", False, b"ABC"),  # ... dropped when not strict
    ("QU*JD", True, None),
    ("QU*JD", False, b"ABC"),  # unknown characters skipped when not strict
])
def test_php_base64_decode(data, strict, expected):
    assert lc.php_base64_decode(data, strict) == expected


# --- settings --------------------------------------------------------------------------------------


def test_cookie_settings_from_the_environment():
    s = Settings.from_env({})
    assert (s.laravel_session_secure, s.laravel_session_domain) == (True, None)
    assert (s.exchange_failure_limit, s.exchange_failure_window_seconds) == (20, 300)
    s = Settings.from_env({"LARAVEL_SESSION_SECURE": "false", "LARAVEL_SESSION_DOMAIN": ".example.com",
                           "EXCHANGE_FAILURE_LIMIT": "5", "EXCHANGE_FAILURE_WINDOW_SECONDS": "60"})
    assert (s.laravel_session_secure, s.laravel_session_domain) == (False, ".example.com")
    assert (s.exchange_failure_limit, s.exchange_failure_window_seconds) == (5, 60)


@pytest.mark.parametrize(("env", "variable"), [
    ({"LARAVEL_SESSION_SECURE": "maybe"}, "LARAVEL_SESSION_SECURE"),
    ({"LARAVEL_SESSION_DOMAIN": "a.com; HttpOnly"}, "LARAVEL_SESSION_DOMAIN"),
    ({"LARAVEL_SESSION_DOMAIN": "a .com"}, "LARAVEL_SESSION_DOMAIN"),
    ({"EXCHANGE_FAILURE_LIMIT": "0"}, "EXCHANGE_FAILURE_LIMIT"),
    ({"EXCHANGE_FAILURE_WINDOW_SECONDS": "x"}, "EXCHANGE_FAILURE_WINDOW_SECONDS"),
])
def test_cookie_setting_errors_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)
