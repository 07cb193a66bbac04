"""Content hashes of JSON-able values: the one way versions are computed from data."""

import hashlib
import json


def canonical_json(payload: object) -> str:
    """``payload`` as canonical JSON: sorted keys, no whitespace.

    Two payloads with equal content give the same text whatever their key order.
    """
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def sha256_prefix(text: str, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def digest(payload: object, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``payload``'s canonical JSON.

    Parameters
    ----------
    payload
        Any JSON-able value (a ``str`` is hashed as its JSON string).
    length
        How many hex digits to keep (12 names a version; 16 a grid).

    Returns
    -------
    str
        The hex digest prefix.
    """
    return sha256_prefix(canonical_json(payload), length)
