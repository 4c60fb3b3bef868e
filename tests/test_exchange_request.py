"""parse_exchange_request: the session cookie or an RFC 8693 body (JSON or form); everything else is a 400."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import pytest

from tokenmigration.exchange import (
    GRANT_TYPE,
    SUBJECT_TOKEN_TYPE,
    ExchangeError,
    InvalidRequest,
    parse_exchange_request,
)
from tokenmigration.exchange.request import client_address

TOKEN = "s%3AabcDEF_-123.0dz%2Bsig%2Fnature"
FIELDS = {"grant_type": GRANT_TYPE, "subject_token": TOKEN, "subject_token_type": SUBJECT_TOKEN_TYPE}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_cookie_header():
    request = parse_exchange_request({"Cookie": f"theme=dark; connect.sid={TOKEN}; other=1"}, None,
                                     source="203.0.113.7")
    assert (request.subject_token, request.via, request.source) == (TOKEN, "cookie", "203.0.113.7")


def test_cookie_details():
    # header names in any case, the first occurrence wins (the `cookie` package), quotes removed
    assert parse_exchange_request({"cookie": f'connect.sid="{TOKEN}"; connect.sid=second'}, "").subject_token == TOKEN
    # HTTP/2 clients may send several cookie headers; multi-value headers arrive as lists
    assert parse_exchange_request({"COOKIE": ["a=1", f"connect.sid={TOKEN}"]}, None).subject_token == TOKEN
    assert parse_exchange_request({"Cookie": f"sid={TOKEN}"}, None, cookie_name="sid").subject_token == TOKEN
    assert parse_exchange_request({"Cookie": f"xconnect.sid=1; connect.sid={TOKEN}"}, None).subject_token == TOKEN


def test_no_source_is_one_shared_bucket():
    assert parse_exchange_request({"Cookie": f"connect.sid={TOKEN}"}, None).source == "unknown"
    assert parse_exchange_request({"Cookie": f"connect.sid={TOKEN}"}, None, source=" ").source == "unknown"


@pytest.mark.parametrize(("headers", "body"), [
    (JSON, json.dumps(FIELDS)),
    (FORM, urlencode(FIELDS)),
    ({"content-type": "application/json; charset=utf-8"}, json.dumps(FIELDS).encode()),
    ({}, json.dumps(FIELDS)),  # no content type: sniffed
    ({}, urlencode(FIELDS)),
    (JSON, json.dumps({**FIELDS, "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
                       "audience": "ignored"})),
])
def test_rfc8693_bodies(headers, body):
    request = parse_exchange_request(headers, body)
    assert (request.subject_token, request.via) == (TOKEN, "body")


def test_base64_bodies_as_api_gateway_sends_them():
    body = base64.b64encode(urlencode(FIELDS).encode()).decode()
    assert parse_exchange_request(FORM, body, is_base64=True).subject_token == TOKEN


def test_form_encoding_keeps_the_token_exact():
    # The wire value (s%3A...%2B...) form-encoded once more comes back unchanged.
    assert "%253A" in urlencode(FIELDS)
    assert parse_exchange_request(FORM, urlencode(FIELDS)).subject_token == TOKEN


def test_body_wins_over_cookie_and_empty_bodies_fall_back_to_it():
    headers = {**JSON, "Cookie": "connect.sid=from-cookie"}
    assert parse_exchange_request(headers, json.dumps(FIELDS)).via == "body"
    for body in (None, "", "  ", "{}", json.dumps({"unrelated": 1})):
        assert parse_exchange_request(headers, body).subject_token == "from-cookie"


@pytest.mark.parametrize(("headers", "body", "is_base64"), [
    ({}, None, False),  # nothing at all
    ({"Cookie": "theme=dark"}, None, False),  # cookies, but not the session
    ({"Cookie": "connect.sid="}, None, False),  # an empty session cookie
    ({"Cookie": "connect.sid=" + "a" * 5000}, None, False),  # longer than any browser cookie
    (JSON, "{not json", False),
    (JSON, "[1, 2]", False),
    (JSON, json.dumps({**FIELDS, "grant_type": "password"}), False),
    (JSON, json.dumps({**FIELDS, "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"}), False),
    (JSON, json.dumps({**FIELDS, "requested_token_type": "urn:ietf:params:oauth:token-type:jwt"}), False),
    (JSON, json.dumps({**FIELDS, "subject_token": ""}), False),
    (JSON, json.dumps({**FIELDS, "subject_token": 12}), False),
    (JSON, json.dumps({**FIELDS, "subject_token": None}), False),
    (JSON, json.dumps({k: v for k, v in FIELDS.items() if k != "subject_token"}), False),
    (JSON, json.dumps({k: v for k, v in FIELDS.items() if k != "grant_type"}), False),
    (FORM, urlencode(FIELDS) + "&subject_token=again", False),  # repeated parameter
    (FORM, "grant_type", False),  # not a form
    (FORM, urlencode({**FIELDS, "subject_token": "x" * 20000}), False),  # oversized
    (FORM, "!!not base64!!", True),
    (JSON, b"\xff\xfe{}", False),  # not UTF-8
    ({"Content-Type": "text/plain"}, urlencode(FIELDS), False),
    ({"Content-Type": "multipart/form-data; boundary=x", "Cookie": f"connect.sid={TOKEN}"}, "--x--", False),
])
def test_malformed_requests_are_invalid_request(headers, body, is_base64):
    with pytest.raises(InvalidRequest) as raised:
        parse_exchange_request(headers, body, is_base64)
    refused = raised.value
    assert isinstance(refused, ExchangeError)
    assert (refused.status, refused.body()) == (400, {"error": "invalid_request"})
    assert refused.headers()["Cache-Control"] == "no-store"


def test_the_token_stays_out_of_repr():
    request = parse_exchange_request({"Cookie": f"connect.sid={TOKEN}"}, None, source="198.51.100.1")
    assert TOKEN not in repr(request) and "198.51.100.1" in repr(request)


# --- the client's address behind trusted proxies -------------------------------------------------------------

XFF = "X-Forwarded-For"


@pytest.mark.parametrize(("headers", "hops", "expected"), [
    ({}, 1, "10.0.0.9"),  # no header: the source IP
    ({"X-Forwarded-For": "203.0.113.7"}, 1, "203.0.113.7"),
    # CloudFront appended the viewer, API Gateway appended CloudFront: two trusted hops.
    ({"X-Forwarded-For": "203.0.113.7, 130.176.98.77"}, 2, "203.0.113.7"),
    # Whatever the client wrote itself stays to the left of what the trusted proxies appended.
    ({"x-forwarded-for": "6.6.6.6, 7.7.7.7, 203.0.113.7, 130.176.98.77"}, 2, "203.0.113.7"),
    ({"X-Forwarded-For": ["6.6.6.6, 203.0.113.7", "130.176.98.77"]}, 2, "203.0.113.7"),  # repeated lines, in order
    ({"X-Forwarded-For": "130.176.98.77"}, 2, "10.0.0.9"),  # too few entries: not the configured way in
    ({"X-Forwarded-For": "unknown, 130.176.98.77"}, 2, "10.0.0.9"),  # no address there
    ({"X-Forwarded-For": "203.0.113.7:51234, 130.176.98.77"}, 2, "203.0.113.7"),
    ({"X-Forwarded-For": "[2001:DB8::7]:443, 130.176.98.77"}, 2, "2001:db8::7"),
    ({"X-Forwarded-For": "::ffff:203.0.113.7"}, 1, "203.0.113.7"),
])
def test_client_address_is_the_right_most_untrusted_entry(headers, hops, expected):
    assert client_address(headers, "10.0.0.9", XFF, hops) == expected


def test_without_a_trusted_header_the_source_ip_counts_whatever_the_headers_say():
    assert client_address({"X-Forwarded-For": "203.0.113.7"}, "10.0.0.9", None) == "10.0.0.9"
