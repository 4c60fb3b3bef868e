"""Sanctum personal access tokens, minted and checked exactly as laravel/sanctum does."""

from __future__ import annotations

import hashlib
import hmac
import zlib
from dataclasses import dataclass

from tokenmigration.formats.randomness import random_alnum_block

ENTROPY_LENGTH = 40


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A token before it has a row id. ``secret`` is the plaintext: keep it in memory only."""

    secret: str
    hash: str

    def plaintext(self, token_id: int) -> str:
        """What the client receives: ``"{id}|{secret}"``."""
        return f"{token_id}|{self.secret}"

    def __repr__(self) -> str:  # never let a plaintext reach a log through repr()
        return f"MintedToken(hash={self.hash[:8]}...)"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def make_secret(entropy: str, prefix: str = "") -> str:
    return f"{prefix}{entropy}{zlib.crc32(entropy.encode('ascii')):08x}"


def mint_tokens(count: int, prefix: str = "") -> list[MintedToken]:
    """Mint ``count`` tokens: ``prefix + Str::random(40) + crc32b(entropy)``, stored as sha256."""
    crc32 = zlib.crc32
    sha256 = hashlib.sha256
    out = []
    for entropy in random_alnum_block(count, ENTROPY_LENGTH):
        raw = entropy.encode("ascii")
        secret = f"{prefix}{entropy}{crc32(raw):08x}"
        out.append(MintedToken(secret, sha256(secret.encode("utf-8")).hexdigest()))
    return out


def mint_token(prefix: str = "") -> MintedToken:
    return mint_tokens(1, prefix)[0]


def split_bearer(bearer: str) -> tuple[int | None, str]:
    """Split a bearer token the way ``PersonalAccessToken::findToken`` does."""
    if "|" not in bearer:
        return None, bearer
    head, rest = bearer.split("|", 1)
    if not (head.isascii() and head.isdigit()):  # PHP's ctype_digit: ASCII 0-9 only
        return None, bearer
    return int(head), rest


def token_matches(stored_hash: str, secret: str) -> bool:
    """``hash_equals($row->token, hash('sha256', $token))``, in constant time."""
    return hmac.compare_digest(stored_hash.encode("ascii"), hash_token(secret).encode("ascii"))
