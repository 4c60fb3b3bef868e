"""Sanctum personal access tokens (compat.md section 2), checked by a port of Sanctum's own lookup."""

from __future__ import annotations

import hashlib
import hmac
import re
import string
import zlib
from collections import Counter
from dataclasses import dataclass

import pytest

from tokenmigration.formats.randomness import ALPHANUMERIC, random_alnum, random_alnum_block
from tokenmigration.formats.sanctum import (
    ENTROPY_LENGTH,
    MintedToken,
    hash_token,
    make_secret,
    mint_token,
    mint_tokens,
    split_bearer,
    token_matches,
)

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
FOX = "The quick brown fox jumps over the lazy dog"


def crc32b(text: str) -> str:
    """PHP's hash('crc32b', $text)."""
    return format(zlib.crc32(text.encode("ascii")) & 0xFFFFFFFF, "08x")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- a port of Sanctum's PersonalAccessToken::findToken ----------------------------------------------


@dataclass
class Row:
    id: int
    token: str


class TokenTable:
    """personal_access_tokens, reduced to what findToken reads."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}

    def insert(self, token_hash: str) -> int:
        row_id = len(self.rows) + 1
        self.rows[row_id] = Row(row_id, token_hash)
        return row_id

    def find_token(self, bearer: str) -> Row | None:
        if "|" not in bearer:
            return next((row for row in self.rows.values() if row.token == sha256_hex(bearer)), None)
        head, rest = bearer.split("|", 1)
        if not re.fullmatch(r"[0-9]+", head):
            return None
        row = self.rows.get(int(head))
        if row is None:
            return None
        return row if hmac.compare_digest(row.token, sha256_hex(rest)) else None


@pytest.fixture
def table() -> TokenTable:
    return TokenTable()


# --- the secret and its hash -----------------------------------------------------------------------


def test_entropy_length_is_40():
    assert ENTROPY_LENGTH == 40


def test_crc32b_reference_values():
    # Check values of CRC-32/ISO-HDLC, the algorithm of PHP's crc32b.
    assert crc32b("123456789") == "cbf43926"
    assert crc32b(FOX) == "414fa339"


@pytest.mark.parametrize(
    ("entropy", "prefix", "expected"),
    [
        ("123456789", "", "123456789cbf43926"),
        (FOX, "", FOX + "414fa339"),
        ("123456789", "myapp_", "myapp_123456789cbf43926"),  # crc of the entropy only, not the prefix
    ],
)
def test_make_secret_literals(entropy, prefix, expected):
    assert make_secret(entropy, prefix) == expected


def test_crc_is_zero_padded_to_8_chars():
    # Find an entropy whose crc32 has a leading zero nibble; make_secret must keep it.
    entropy = next(e for e in (f"{i:040d}" for i in range(10_000)) if zlib.crc32(e.encode()) < 0x10000000)
    secret = make_secret(entropy)
    assert secret[40:] == crc32b(entropy)
    assert len(secret) == 48
    assert secret[40] == "0"


def test_hash_token_is_sha256_hex():
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_token("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def check_minted(token: MintedToken, prefix: str) -> None:
    secret = token.secret
    assert secret.startswith(prefix)
    entropy, crc = secret[len(prefix) : len(prefix) + 40], secret[len(prefix) + 40 :]
    assert re.fullmatch(r"[A-Za-z0-9]{40}", entropy), secret
    assert re.fullmatch(r"[0-9a-f]{8}", crc), secret
    assert crc == crc32b(entropy)
    assert len(secret) == len(prefix) + 48
    assert token.hash == sha256_hex(secret)
    assert SHA256_HEX.fullmatch(token.hash)
    assert hash_token(secret) == token.hash
    assert make_secret(entropy, prefix) == secret


@pytest.mark.parametrize("prefix", ["", "myapp_", "app-"])
def test_mint_tokens_shape(prefix):
    tokens = mint_tokens(500, prefix)
    assert len(tokens) == 500
    for token in tokens:
        check_minted(token, prefix)


def test_mint_tokens_default_prefix_is_empty():
    check_minted(mint_tokens(1)[0], "")
    assert len(mint_tokens(1)[0].secret) == 48


@pytest.mark.parametrize("prefix", ["", "myapp_"])
def test_mint_token_single(prefix):
    token = mint_token(prefix)
    assert isinstance(token, MintedToken)
    check_minted(token, prefix)


def test_mint_tokens_zero():
    assert mint_tokens(0) == []


def test_plaintext_is_id_pipe_secret():
    token = MintedToken(secret="s3cr3t", hash=sha256_hex("s3cr3t"))
    assert token.plaintext(17) == "17|s3cr3t"


def test_mint_tokens_are_unique_over_10000():
    tokens = mint_tokens(10_000)
    assert len({t.secret for t in tokens}) == 10_000
    assert len({t.hash for t in tokens}) == 10_000
    assert len({t.secret[:40] for t in tokens}) == 10_000


def test_separate_mint_calls_differ():
    assert mint_token().secret != mint_token().secret


# --- Sanctum's lookup accepts what we mint -------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "myapp_"])
def test_find_token_accepts_minted_plaintext(table, prefix):
    tokens = mint_tokens(50, prefix)
    ids = [table.insert(t.hash) for t in tokens]
    for row_id, token in zip(ids, tokens, strict=True):
        row = table.find_token(token.plaintext(row_id))
        assert row is not None
        assert row.id == row_id


@pytest.mark.parametrize("prefix", ["", "myapp_"])
def test_find_token_rejects_tampered_tokens(table, prefix):
    token, other = mint_tokens(2, prefix)
    row_id = table.insert(token.hash)
    other_id = table.insert(other.hash)
    plaintext = token.plaintext(row_id)
    assert table.find_token(plaintext) is not None

    last = plaintext[-1]
    tampered = [
        plaintext[:-1] + ("0" if last != "0" else "1"),  # last crc char changed
        plaintext[:-1],  # truncated
        plaintext + "a",  # extended
        plaintext.upper(),
        token.plaintext(other_id),  # right secret, another row's id
        token.plaintext(row_id + 100),  # id of no row
        f"{row_id}|{other.secret}",
        f"{row_id}|{token.secret[len(prefix):]}" if prefix else f"{row_id}|x{token.secret}",
        f"x{row_id}|{token.secret}",  # non-digit id part
        f"|{token.secret}",
        f"{row_id}|",
        token.hash,
        f"{row_id}|{token.hash}",  # the stored hash is not a credential
    ]
    for bearer in tampered:
        assert table.find_token(bearer) is None, bearer


def test_find_token_without_id_looks_up_by_hash_of_whole_token(table):
    token = mint_token()
    row_id = table.insert(token.hash)
    # Sanctum accepts the bare secret: it is looked up by sha256(whole).
    row = table.find_token(token.secret)
    assert row is not None
    assert row.id == row_id
    assert table.find_token(token.secret[:-1]) is None


def test_find_token_crc_of_entropy_alone_is_not_enough(table):
    token = mint_token("myapp_")
    row_id = table.insert(token.hash)
    assert table.find_token(f"{row_id}|{token.secret.removeprefix('myapp_')}") is None


# --- split_bearer mirrors findToken's split ------------------------------------------------------------


@pytest.mark.parametrize(
    ("bearer", "expected"),
    [
        ("12|secret", (12, "secret")),
        ("0|secret", (0, "secret")),
        ("007|secret", (7, "secret")),
        ("12|a|b", (12, "a|b")),  # split at the first '|'
        ("12|", (12, "")),
        ("12||", (12, "|")),
        ("abc|x", (None, "abc|x")),  # not digits: not split
        ("1a|x", (None, "1a|x")),
        ("-1|x", (None, "-1|x")),
        (" 1|x", (None, " 1|x")),
        ("|x", (None, "|x")),
        ("secret", (None, "secret")),
        ("", (None, "")),
    ],
    ids=repr,
)
def test_split_bearer(bearer, expected):
    assert split_bearer(bearer) == expected


def test_split_bearer_id_is_int():
    token_id, _ = split_bearer("42|x")
    assert type(token_id) is int


# str.isdigit() is true for non-ASCII digits: "١٢" (Arabic-Indic) splits as id 12,
# and "²" makes int() raise ValueError out of a verifier on client input.
@pytest.mark.parametrize("bearer", ["١٢|secret", "²|secret", "１|secret"])
def test_split_bearer_only_splits_at_ascii_digits(bearer):
    assert split_bearer(bearer) == (None, bearer)


def test_split_bearer_agrees_with_sanctum_port(table):
    token = mint_token()
    row_id = table.insert(token.hash)
    token_id, secret = split_bearer(token.plaintext(row_id))
    assert token_id == row_id
    assert secret == token.secret
    assert token_matches(table.rows[token_id].token, secret)


# --- token_matches --------------------------------------------------------------------------------------


def test_token_matches():
    token = mint_token()
    other = mint_token()
    assert token_matches(token.hash, token.secret)
    assert not token_matches(token.hash, other.secret)
    assert not token_matches(other.hash, token.secret)
    assert not token_matches(token.hash, token.secret[:-1])
    assert not token_matches(token.hash, token.secret + "x")
    assert not token_matches(token.hash, token.hash)
    assert not token_matches(token.hash, "")


def test_token_matches_is_exact_like_hash_equals():
    token = mint_token()
    assert not token_matches(token.hash.upper(), token.secret)
    assert not token_matches(token.hash[:-1], token.secret)
    assert not token_matches(token.hash + "0", token.secret)


def test_token_matches_literal():
    assert token_matches("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc")


# --- the plaintext never leaks through repr ------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "myapp_"])
def test_repr_never_contains_the_secret(prefix):
    for token in mint_tokens(200, prefix):
        entropy = token.secret[len(prefix) : len(prefix) + 40]
        for text in (repr(token), str(token), f"{token}", f"{token!r}", repr([token]), repr({"t": token})):
            assert token.secret not in text
            assert entropy not in text
            assert entropy[:12] not in text
            assert token.hash not in text


def test_repr_is_a_hash_prefix():
    token = mint_token()
    assert repr(token) == f"MintedToken(hash={token.hash[:8]}...)"


def test_minted_token_is_immutable():
    token = mint_token()
    with pytest.raises(AttributeError):
        token.secret = "other"  # type: ignore[misc]


# --- randomness -----------------------------------------------------------------------------------------


def test_alphabet_is_the_62_alphanumerics():
    assert string.ascii_letters + string.digits == ALPHANUMERIC
    assert len(set(ALPHANUMERIC)) == 62


@pytest.mark.parametrize(("count", "length"), [(0, 40), (1, 1), (1, 40), (3, 7), (1000, 40), (1, 5000)])
def test_random_alnum_block_shape(count, length):
    block = random_alnum_block(count, length)
    assert len(block) == count
    for text in block:
        assert len(text) == length
        assert re.fullmatch(r"[A-Za-z0-9]+", text)


def test_random_alnum():
    value = random_alnum(40)
    assert re.fullmatch(r"[A-Za-z0-9]{40}", value)
    assert random_alnum(40) != value


def test_random_alnum_block_rough_uniformity():
    text = "".join(random_alnum_block(5_000, 40))
    assert len(text) == 200_000
    counts = Counter(text)
    assert set(counts) == set(ALPHANUMERIC)  # every character appears, no other does
    expected = len(text) / 62  # ~3226 each, standard deviation ~56
    # A plain byte % 62 (no rejection) would give the first 8 letters 25% more.
    for char, count in counts.items():
        assert 0.9 * expected < count < 1.1 * expected, (char, count)
    low, high = sum(counts[c] for c in ALPHANUMERIC[:8]), sum(counts[c] for c in ALPHANUMERIC[8:])
    assert abs(low / 8 - high / 54) < 0.05 * expected


def test_random_alnum_block_strings_are_independent():
    block = random_alnum_block(10_000, 40)
    assert len(set(block)) == 10_000
