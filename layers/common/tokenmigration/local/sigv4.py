"""SigV4 for ``execute-api``: signing (the operator's client) and checking (the local server, as API Gateway's
IAM authorizer does), both with botocore's canonicalization so the two sides cannot disagree on it."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

SERVICE = "execute-api"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=5)

# API Gateway's answers (message, x-amzn-ErrorType), word for word.
MISSING_TOKEN = "Missing Authentication Token"
BAD_SIGNATURE = ("The request signature we calculated does not match the signature you provided. Check your AWS "
                 "Secret Access Key and signing method. Consult the service documentation for details.")
UNKNOWN_KEY = "The security token included in the request is invalid."


class SignatureError(Exception):
    """403 with ``{"message": message}``, as API Gateway answers it."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


@dataclass(frozen=True)
class Caller:
    """Who signed: what API Gateway puts in ``requestContext.identity``."""

    access_key: str
    account: str
    user_arn: str
    caller: str


def sign(method: str, url: str, headers: Mapping[str, str], body: bytes, credentials: Credentials | ReadOnlyCredentials,
         region: str, service: str = SERVICE) -> dict[str, str]:
    """The headers to send (Authorization, X-Amz-Date, X-Amz-Security-Token when the credentials have one)."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    SigV4Auth(credentials, service, region).add_auth(request)
    return dict(request.headers.items())


_AUTH_PARAM = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]*)")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def verify(method: str, url: str, headers: Mapping[str, str], body: bytes, *, access_key: str, secret_key: str,
           region: str, account: str, now: datetime | None = None, service: str = SERVICE) -> Caller:
    """Check the request's SigV4 signature against the one key pair this server knows; the caller, or
    SignatureError with API Gateway's message. ``url`` is the URL as the client sent it (scheme, Host, raw path
    and query), ``headers`` the request's headers as received."""
    authorization = _header(headers, "Authorization")
    if not authorization:
        raise SignatureError(MISSING_TOKEN, "MissingAuthenticationTokenException")
    if not authorization.startswith(ALGORITHM + " "):
        raise SignatureError(f"Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
                             f"Authorization={authorization.split(' ', 1)[0]}", "IncompleteSignatureException")
    params = dict(_AUTH_PARAM.findall(authorization))
    missing = [name for name in ("Credential", "Signature", "SignedHeaders") if not params.get(name)]
    amz_date = _header(headers, "X-Amz-Date")
    if not amz_date:
        missing.append("X-Amz-Date")
    if missing:
        text = " ".join(f"Authorization header requires '{name}' parameter." for name in missing
                        if name != "X-Amz-Date")
        if "X-Amz-Date" in missing:
            text = (text + " " if text else "") + ("Authorization header requires existence of either a "
                                                  "'X-Amz-Date' or a 'Date' header.")
        raise SignatureError(text + f" Authorization={authorization}", "IncompleteSignatureException")
    scope = params["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise SignatureError(f"Credential should be scoped to a valid region. Authorization={authorization}",
                             "IncompleteSignatureException")
    key_id, scope_date, scope_region, scope_service, _ = scope
    try:
        signed_at = datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError(f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See "
                             "http://en.wikipedia.org/wiki/ISO_8601", "IncompleteSignatureException") from None
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    stamp = now.strftime(SIGV4_TIMESTAMP)
    if signed_at < now - MAX_SKEW:
        raise SignatureError(f"Signature expired: {amz_date} is now earlier than "
                             f"{(now - MAX_SKEW).strftime(SIGV4_TIMESTAMP)} ({stamp} - 5 min.)",
                             "InvalidSignatureException")
    if signed_at > now + MAX_SKEW:
        raise SignatureError(f"Signature not yet current: {amz_date} is still later than "
                             f"{(now + MAX_SKEW).strftime(SIGV4_TIMESTAMP)} ({stamp} + 5 min.)",
                             "InvalidSignatureException")
    if scope_date != amz_date[:8]:
        raise SignatureError(f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
                             f"HTTP: '{scope_date}' != '{amz_date[:8]}', from '{amz_date}'.",
                             "InvalidSignatureException")
    if scope_region != region:
        raise SignatureError(f"Credential should be scoped to a valid region, not '{scope_region}'. ",
                             "InvalidSignatureException")
    if scope_service != service:
        raise SignatureError(f"Credential should be scoped to correct service: '{service}'. ",
                             "InvalidSignatureException")
    if not hmac.compare_digest(key_id.encode(), access_key.encode()):
        raise SignatureError(UNKNOWN_KEY, "UnrecognizedClientException")

    # Recompute over exactly the headers the client signed, with botocore's canonicalization.
    signed_names = params["SignedHeaders"].lower().split(";")
    if "host" not in signed_names:
        raise SignatureError(BAD_SIGNATURE, "InvalidSignatureException")
    kept: dict[str, str] = {}
    for name in signed_names:
        values = [value for key, value in headers.items() if key.lower() == name]
        if not values:
            raise SignatureError(BAD_SIGNATURE, "InvalidSignatureException")
        kept[name] = ",".join(values)
    content_sha = kept.get("x-amz-content-sha256")
    if content_sha is not None and content_sha != hashlib.sha256(body).hexdigest():
        raise SignatureError(BAD_SIGNATURE, "InvalidSignatureException")
    request = AWSRequest(method=method, url=url, data=body, headers=kept)
    request.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials(access_key, secret_key), service, region)
    # Headers botocore never signs (User-Agent, Expect, ...) would be left out of its canonical request: the
    # canonical headers are built from the names the client listed, so a client that signed them still matches.
    canonical = "\n".join([
        method.upper(),
        auth._normalize_url_path(urlsplit(url).path),
        auth.canonical_query_string(request),
        "\n".join(f"{name}:{' '.join(kept[name].split())}" for name in sorted(signed_names)) + "\n",
        ";".join(sorted(signed_names)),
        content_sha or auth.payload(request),
    ])
    string_to_sign = auth.string_to_sign(request, canonical)
    expected = auth.signature(string_to_sign, request)
    if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
        raise SignatureError(f"{BAD_SIGNATURE}\n\nThe Canonical String for this request should have been\n"
                             f"'{canonical}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n",
                             "InvalidSignatureException")
    user_arn = f"arn:aws:iam::{account}:user/local"
    return Caller(access_key=key_id, account=account, user_arn=user_arn, caller=key_id)
