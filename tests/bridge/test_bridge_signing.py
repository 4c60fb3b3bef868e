"""The bridge package signs its calls with AsyncAws Core's SignerV4 (Debian's php-async-aws-core): proven
against AWS's published SigV4 test vectors, and against the verifier the local twin (like API Gateway's IAM
authorizer) applies to every admin route."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tokenmigration.local.sigv4 import SignatureError, verify

HERE = Path(__file__).resolve().parent
VECTORS = json.loads((HERE / "sigv4_vectors.json").read_text())
KEY, SECRET, REGION = "AKIABRIDGESIGNING001", "bridge-signing-test-secret", "eu-west-1"


def php_sign(document: dict) -> dict:
    if shutil.which("php") is None or not Path("/usr/share/php/AsyncAws/Core/autoload.php").exists():
        pytest.fail("needs php-cli and php-async-aws-core (bash .ci/run installs them)", pytrace=False)
    done = subprocess.run(["php", str(HERE / "sign.php")], input=json.dumps(document), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_signer_matches_the_aws_test_suite(vector):
    signed = php_sign({"mode": "vector", "method": vector["method"], "url": vector["url"],
                       "headers": vector["headers"], "body": "", "service": VECTORS["service"],
                       "region": VECTORS["region"], "key": VECTORS["key"], "secret": VECTORS["secret"],
                       "now": VECTORS["now"]})
    assert signed["headers"]["authorization"] == vector["authorization"]


def _bridge_call(body: str, now: datetime, endpoint: str = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"):
    return php_sign({"endpoint": endpoint, "region": REGION, "key": KEY, "secret": SECRET, "body": body,
                     "now": now.isoformat()})


def test_bridge_call_passes_the_twins_iam_check():
    now = datetime.now(UTC).replace(microsecond=0)
    body = json.dumps({"session_cookie": "s%3Aabc.def", "client_ip": "203.0.113.7"})
    signed = _bridge_call(body, now)
    assert signed["url"] == "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/auth/migration/bridge"
    assert signed["body"] == body
    caller = verify("POST", signed["url"], signed["headers"], signed["body"].encode(), access_key=KEY,
                    secret_key=SECRET, region=REGION, account="123456789012", now=now)
    assert caller.access_key == KEY


@pytest.mark.parametrize("tamper", ["body", "secret", "region", "path"])
def test_a_changed_bridge_call_fails_the_twins_iam_check(tamper):
    now = datetime.now(UTC).replace(microsecond=0)
    body = json.dumps({"session_cookie": "s%3Aabc.def"})
    signed = _bridge_call(body, now)
    url, sent = signed["url"], signed["body"].encode()
    secret, region = SECRET, REGION
    if tamper == "body":
        sent = json.dumps({"session_cookie": "s%3Aother.def"}).encode()
    elif tamper == "secret":
        secret = SECRET + "x"
    elif tamper == "region":
        region = "us-east-1"
    else:
        url = url.replace("/bridge", "/exchange")
    with pytest.raises(SignatureError):
        verify("POST", url, signed["headers"], sent, access_key=KEY, secret_key=secret, region=region,
               account="123456789012", now=now)
