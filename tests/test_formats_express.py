"""express-session values in Redis and the signed connect.sid cookie (compat.md section 1)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from urllib.parse import quote

import pytest

from tokenmigration.formats.express import (
    KIND_MESSAGES,
    PROBLEM_KINDS,
    ParsedSession,
    SessionDecoder,
    SessionKind,
    cookie_value,
    normalize_user_id,
    sign,
    unsign_cookie,
)

COOKIE = {"originalMaxAge": 86400000, "expires": "2030-01-01T00:00:00.000Z", "httpOnly": True, "path": "/"}


def stored(**fields) -> bytes:
    """A value as connect-redis writes it: JSON.stringify(session)."""
    return json.dumps({"cookie": COOKIE, **fields}, separators=(",", ":")).encode("utf-8")


def express_sid() -> str:
    """express-session's default id: 24 random bytes, base64url without padding."""
    return secrets.token_urlsafe(24)


# --- SessionKind bookkeeping ---------------------------------------------------------------------------


def test_problem_kinds_exclude_normal_sessions():
    assert SessionKind.LOGGED_IN not in PROBLEM_KINDS
    assert SessionKind.ANONYMOUS not in PROBLEM_KINDS
    assert set(PROBLEM_KINDS) == set(SessionKind) - {SessionKind.LOGGED_IN, SessionKind.ANONYMOUS}


def test_every_problem_kind_has_a_message():
    assert set(KIND_MESSAGES) == set(PROBLEM_KINDS)
    assert all(isinstance(m, str) and m for m in KIND_MESSAGES.values())


# --- where the user is: default path passport.user -------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "user_id"),
    [
        (7, 7),
        (0, 0),  # user id 0 is a logged-in user
        (1, 1),
        (2**53 - 1, 2**53 - 1),
        (2**63 - 1, 2**63 - 1),
        ("7", 7),  # serializeUser((u, done) => done(null, String(u.id)))
        ("0", 0),
        ("9223372036854775807", 2**63 - 1),
        ({"id": 7, "username": "ann"}, 7),  # the whole user object
        ({"id": 0, "username": "root"}, 0),
        ({"id": "12", "email": "a@example.com"}, 12),
    ],
    ids=repr,
)
def test_passport_user_logged_in(user, user_id):
    parsed = SessionDecoder().parse(stored(passport={"user": user}))
    assert parsed == ParsedSession(SessionKind.LOGGED_IN, user_id)
    assert type(parsed.user_id) is int


def test_default_path_is_passport_user():
    assert SessionDecoder().path == ("passport", "user")


@pytest.mark.parametrize(
    "raw",
    [
        stored(),  # never logged in
        stored(passport={}),  # passport initialised, nobody logged in (also: after logout)
        stored(passport={"user": None}),
        stored(views=3, returnTo="/dashboard"),
        stored(userId=5),  # another app's field: not on the configured path
    ],
    ids=["no passport", "empty passport", "null user", "app fields only", "other path"],
)
def test_anonymous_sessions(raw):
    assert SessionDecoder().parse(raw) == ParsedSession(SessionKind.ANONYMOUS)


def test_user_id_zero_is_not_anonymous():
    parsed = SessionDecoder().parse(stored(passport={"user": 0}))
    assert parsed.kind is SessionKind.LOGGED_IN
    assert parsed.user_id == 0


# --- odd values seen in real stores ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (None, SessionKind.NULL_VALUE),  # key vanished between SCAN and GET
        (b"null", SessionKind.NULL_VALUE),
        ("null", SessionKind.NULL_VALUE),
        (b" null\n", SessionKind.NULL_VALUE),
        (b"", SessionKind.EMPTY_VALUE),
        ("", SessionKind.EMPTY_VALUE),
        (b"   ", SessionKind.EMPTY_VALUE),
        (b"\n\t", SessionKind.EMPTY_VALUE),
        (b"not json", SessionKind.NOT_JSON),
        (b"{", SessionKind.NOT_JSON),
        (b"{'cookie': {}}", SessionKind.NOT_JSON),
        (b'{"cookie":{}}garbage', SessionKind.NOT_JSON),
        (b"undefined", SessionKind.NOT_JSON),
        (b"\xef\xbb\xbf{}", SessionKind.NOT_JSON),  # BOM: not what JSON.stringify writes
        (b"\x80\x81\xfe\xff", SessionKind.NOT_UTF8),
        (b'{"cookie":{},"name":"\xe9"}', SessionKind.NOT_UTF8),  # latin-1 byte inside JSON
        (b"[]", SessionKind.NOT_AN_OBJECT),
        (b"[1,2]", SessionKind.NOT_AN_OBJECT),
        (b'"a string"', SessionKind.NOT_AN_OBJECT),
        (b"42", SessionKind.NOT_AN_OBJECT),
        (b"true", SessionKind.NOT_AN_OBJECT),
        (b"{}", SessionKind.INVALID_COOKIE),
        (b'{"cookie": null}', SessionKind.INVALID_COOKIE),
        (b'{"cookie": "x"}', SessionKind.INVALID_COOKIE),
        (b'{"cookie": []}', SessionKind.INVALID_COOKIE),
        (b'{"passport": {"user": 7}}', SessionKind.INVALID_COOKIE),
    ],
    ids=repr,
)
def test_odd_values(raw, kind):
    parsed = SessionDecoder().parse(raw)
    assert parsed == ParsedSession(kind)


@pytest.mark.parametrize(
    "user",
    [
        True,
        False,
        1.5,
        7.0,
        -3,
        -1,
        2**63,
        "abc",
        "",
        " 7",
        "7 ",
        "-3",
        "1.5",
        "1e3",
        "0x10",
        "٣",  # Arabic-Indic digit
        "9223372036854775808",
        "1" * 40,
        [7],
        {"id": True},
        {"id": -3},
        {"id": "abc"},
        {"id": 1.5},
    ],
    ids=repr,
)
def test_user_ids_that_are_not_integers(user):
    parsed = SessionDecoder().parse(stored(passport={"user": user}))
    assert parsed == ParsedSession(SessionKind.INVALID_USER_ID)
    assert parsed.kind in PROBLEM_KINDS


def test_deeply_nested_json_is_classified_not_raised():
    parsed = SessionDecoder().parse(b"[" * 100_000 + b"]" * 100_000)
    assert parsed.kind in PROBLEM_KINDS


def test_classify_accepts_an_already_decoded_document():
    decoder = SessionDecoder()
    document = {"cookie": {}, "passport": {"user": 3}}
    assert decoder.classify(document) == ParsedSession(SessionKind.LOGGED_IN, 3)
    assert decoder.classify(None) == ParsedSession(SessionKind.NULL_VALUE)
    assert decoder.classify([]) == ParsedSession(SessionKind.NOT_AN_OBJECT)


def test_str_and_bytes_parse_alike():
    raw = stored(passport={"user": {"id": 7, "username": "ann"}}, ip="10.0.0.1")
    assert SessionDecoder().parse(raw) == SessionDecoder().parse(raw.decode("utf-8"))


def test_non_ascii_json_text_is_fine():
    raw = json.dumps({"cookie": COOKIE, "passport": {"user": {"id": 5, "name": "Zoë 日本"}}}).encode()
    assert SessionDecoder().parse(raw) == ParsedSession(SessionKind.LOGGED_IN, 5)


# --- normalize_user_id ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (42, 42),
        ("42", 42),
        (2**63 - 1, 2**63 - 1),
        (2**63, None),
        (-1, None),
        (True, None),
        (1.0, None),
        ("", None),
        ("-1", None),
        (None, None),
    ],
    ids=repr,
)
def test_normalize_user_id(value, expected):
    assert normalize_user_id(value) == expected


# --- custom user-id paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "expected"),
    [
        ("userId", stored(userId=9), ParsedSession(SessionKind.LOGGED_IN, 9)),
        ("userId", stored(userId="9"), ParsedSession(SessionKind.LOGGED_IN, 9)),
        ("userId", stored(userId=0), ParsedSession(SessionKind.LOGGED_IN, 0)),
        ("userId", stored(userId="x"), ParsedSession(SessionKind.INVALID_USER_ID)),
        ("userId", stored(), ParsedSession(SessionKind.ANONYMOUS)),
        ("userId", stored(passport={"user": 9}), ParsedSession(SessionKind.ANONYMOUS)),
        ("user.id", stored(user={"id": 12, "name": "bo"}), ParsedSession(SessionKind.LOGGED_IN, 12)),
        ("user.id", stored(user={"id": "12"}), ParsedSession(SessionKind.LOGGED_IN, 12)),
        ("user.id", stored(user={"id": -1}), ParsedSession(SessionKind.INVALID_USER_ID)),
        ("user.id", stored(user={}), ParsedSession(SessionKind.ANONYMOUS)),
        ("user.id", stored(user=12), ParsedSession(SessionKind.ANONYMOUS)),  # not an object: no .id
        ("user.id", stored(user="12"), ParsedSession(SessionKind.ANONYMOUS)),
        ("user.id", stored(), ParsedSession(SessionKind.ANONYMOUS)),
        # an object at the path: falls back to its .id
        ("user", stored(user={"id": 4}), ParsedSession(SessionKind.LOGGED_IN, 4)),
        ("a.b.c", stored(a={"b": {"c": 8}}), ParsedSession(SessionKind.LOGGED_IN, 8)),
    ],
    ids=repr,
)
def test_custom_user_id_paths(path, raw, expected):
    decoder = SessionDecoder(path)
    assert decoder.path == tuple(path.split("."))
    assert decoder.parse(raw) == expected


def test_custom_path_still_checks_the_cookie():
    assert SessionDecoder("userId").parse(b'{"userId": 9}') == ParsedSession(SessionKind.INVALID_COOKIE)


# --- ip and user agent -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "ip", "user_agent"),
    [
        ({"ip": "10.0.0.1", "userAgent": "Mozilla/5.0"}, "10.0.0.1", "Mozilla/5.0"),
        ({"ipAddress": "::1", "user_agent": "curl/8"}, "::1", "curl/8"),
        ({"ip_address": "192.168.1.2", "ua": "UA"}, "192.168.1.2", "UA"),
        ({"remoteAddress": "2001:db8::1"}, "2001:db8::1", None),
        ({"ip": "", "ipAddress": "10.0.0.9"}, "10.0.0.9", None),  # empty values are skipped
        ({"ip": 123, "userAgent": ["x"]}, None, None),  # non-strings are ignored
        ({"ip": "10.0.0.1", "remoteAddress": "10.0.0.2"}, "10.0.0.1", None),  # first field wins
        ({}, None, None),
    ],
    ids=repr,
)
def test_ip_and_user_agent_are_picked_up(fields, ip, user_agent):
    parsed = SessionDecoder().parse(stored(passport={"user": 7}, **fields))
    assert parsed == ParsedSession(SessionKind.LOGGED_IN, 7, ip, user_agent)


# --- cookie signing (cookie-signature 1.0.x) -------------------------------------------------------------


def reference_sign(value: str, secret: str) -> str:
    """cookie-signature: value + '.' + base64(HMAC-SHA256(secret, value)) with '=' stripped."""
    mac = hmac.new(secret.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).digest()
    return value + "." + base64.b64encode(mac).decode("ascii").rstrip("=")


def test_sign_matches_cookie_signature_test_vector():
    expected = "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
    assert reference_sign("hello", "tobiiscool") == expected
    assert sign("hello", "tobiiscool") == expected


@pytest.mark.parametrize(
    ("sid", "secret"),
    [
        ("hello", "tobiiscool"),
        ("x7f3kQ_-AbCdEfGhIjKlMnOpQrStUvWx", "keyboard cat"),
        ("a.b.c", "s3cret"),
        ("Zoë", "sécret"),  # UTF-8 on both sides, as Node does for strings
        ("sid", ""),
    ],
    ids=repr,
)
def test_sign_matches_reference(sid, secret):
    signed = sign(sid, secret)
    assert signed == reference_sign(sid, secret)
    signature = signed[len(sid) + 1 :]
    assert len(signature) == 43
    assert "=" not in signature
    assert "-" not in signature and "_" not in signature


def test_signatures_use_the_standard_base64_alphabet():
    # Over many ids some signature contains '+' or '/', never '-' or '_'.
    signatures = [sign(express_sid(), "keyboard cat").rsplit(".", 1)[1] for _ in range(200)]
    joined = "".join(signatures)
    assert "+" in joined or "/" in joined
    assert "-" not in joined and "_" not in joined


def test_cookie_value_literal():
    assert cookie_value("hello", "tobiiscool") == "s%3Ahello.DGDUkGlIkCzPz%2BC0B064FNgHdEjox7ch8tOBGslZ5QI"


@pytest.mark.parametrize("sid", [express_sid() for _ in range(20)] + ["hello", "a.b", "Zoë"])
def test_cookie_value_is_encode_uri_component_of_signed_value(sid):
    value = cookie_value(sid, "keyboard cat")
    assert value.startswith("s%3A")
    # encodeURIComponent leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) alone.
    assert value == quote("s:" + reference_sign(sid, "keyboard cat"), safe="-_.!~*'()")
    assert "+" not in value and "/" not in value and ":" not in value
    assert unsign_cookie(value, ["keyboard cat"]) == sid


def test_unsign_accepts_an_already_decoded_cookie():
    sid = express_sid()
    assert unsign_cookie("s:" + sign(sid, "keyboard cat"), ["keyboard cat"]) == sid


def test_unsign_splits_at_the_last_dot():
    assert unsign_cookie(cookie_value("a.b.c", "k"), ["k"]) == "a.b.c"


# --- secret rotation -------------------------------------------------------------------------------------

ROTATION = ["newest-secret", "older-secret", "oldest-secret"]


@pytest.mark.parametrize("signing_secret", ROTATION, ids=["first", "middle", "last"])
def test_rotation_any_secret_in_the_list_verifies(signing_secret):
    sid = express_sid()
    assert unsign_cookie(cookie_value(sid, signing_secret), ROTATION) == sid


def test_rotation_single_secret_list():
    sid = express_sid()
    assert unsign_cookie(cookie_value(sid, "only"), ["only"]) == sid


def test_rotation_secret_removed_from_the_list_no_longer_verifies():
    sid = express_sid()
    assert unsign_cookie(cookie_value(sid, "oldest-secret"), ROTATION[:2]) is None


def test_no_secrets_verifies_nothing():
    assert unsign_cookie(cookie_value(express_sid(), "k"), []) is None


# --- invalid cookies -------------------------------------------------------------------------------------


def invalid_cookies(sid: str, secret: str) -> dict[str, str]:
    signed = sign(sid, secret)
    value, signature = signed.rsplit(".", 1)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    last_flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    other = sign(express_sid(), secret).rsplit(".", 1)[1]
    return {
        "tampered first char": quote(f"s:{value}.{flipped}", safe=""),
        "tampered last char": quote(f"s:{value}.{last_flipped}", safe=""),
        "truncated signature": quote(f"s:{signed[:-1]}", safe=""),
        "signature with padding": quote(f"s:{signed}=", safe=""),
        "empty signature": quote(f"s:{value}.", safe=""),
        "signature of another sid": quote(f"s:{value}.{other}", safe=""),
        "tampered sid": quote(f"s:{value}x.{signature}", safe=""),
        "missing s: prefix": quote(signed, safe=""),
        "missing s: prefix, decoded": signed,
        "j: prefix": quote(f"j:{signed}", safe=""),
        "no dot": quote(f"s:{value}{signature}", safe=""),
        "empty sid, other signature": quote(f"s:.{signature}", safe=""),
        "empty sid, validly signed": quote("s:" + sign("", secret), safe=""),  # ids are never empty
        "empty": "",
        "prefix only": "s%3A",
        "wrong secret": cookie_value(sid, secret + "x"),
        "url-safe alphabet": quote("s:" + signed.replace("+", "-").replace("/", "_"), safe="")
        if "+" in signature or "/" in signature
        else quote(f"s:{value}.{flipped}", safe=""),
    }


@pytest.mark.parametrize("case", list(invalid_cookies("hello", "tobiiscool")))
def test_invalid_cookies_are_rejected(case):
    cookies = invalid_cookies("hello", "tobiiscool")
    assert unsign_cookie(cookies[case], ["tobiiscool"]) is None
    assert unsign_cookie(cookies[case], ["other", "tobiiscool"]) is None


def test_invalid_cookies_with_realistic_ids():
    secret = "keyboard cat"
    for _ in range(50):
        sid = express_sid()
        assert unsign_cookie(cookie_value(sid, secret), [secret]) == sid
        for case, value in invalid_cookies(sid, secret).items():
            assert unsign_cookie(value, [secret]) is None, case


@pytest.mark.parametrize("user", [{"username": "ann"}, {"id": None}])
def test_a_user_object_without_an_id_is_a_problem_not_an_anonymous_session(user):
    parsed = SessionDecoder().parse(json.dumps({"cookie": {}, "passport": {"user": user}}))
    assert parsed.kind is SessionKind.INVALID_USER_ID
