"""What counts as a record's JSON text: one definition for the bridge and the lake.

The bridge parses with Python's json, the lake with Spark (Jackson). Left to their defaults they
disagree: json.loads takes duplicate keys (the last wins), NaN and Infinity, a UTF-8 BOM, UTF-16
and UTF-32, encoded surrogates, and fails with RecursionError on deep nesting; Spark rejects
duplicate keys, NaN and deep nesting, but replaces invalid UTF-8 with U+FFFD, turns a lone
surrogate escape into "?", and ignores whatever follows the first JSON value. So here is the rule
both apply (`loads` in the bridge, spark_jobs.validation.parse / json_problem in the lake); the
tests run one corpus of tricky payloads through both (tests/json_corpus.py).

A payload is a record's JSON text when, checked in this order (the first failure is the reason):

1. `not_json`  it is valid UTF-8 (no BOM: RFC 8259 forbids it) and no \\u escape is a lone
               surrogate (it would decode to text that has no UTF-8 form);
2. `too_deep`  brackets nest at most MAX_DEPTH deep, counted by a linear scan of the bytes outside
               strings, before any parser recurses;
3. `not_json`  it is exactly one JSON value (RFC 8259; whitespace around it allowed) with no NaN,
               Infinity or -Infinity, no number of more than MAX_NUMBER_DIGITS digits and no key
               longer than MAX_NAME_LENGTH UTF-16 code units (the last two are Jackson's default
               limits: Spark cannot parse beyond them, so the bridge must not forward them);
4. `duplicate_key`  no object has the same key twice (after unescaping), at any depth.

Records are flat objects (depth 1), so any MAX_DEPTH >= 1 keeps every valid record; nesting up to
it is a contract violation like any other. Whether the value is a record of the right type is the
contract's business (contracts.validate), not this module's.

Cost on the bridge's hot path (a valid record): the UTF-8 decode json.loads did anyway, a count of
`{` and `[` (the exact depth scan runs only past MAX_DEPTH of them), a search for a backslash
(the lone-surrogate check runs only when there is one), and an object_pairs_hook per object.
Measured with timeit on the five canonical records: json.loads 3.3-3.8 us, loads 3.9-4.7 us (the
hook ~1 us and the count ~0.35 us, less ~1 us of json.loads' own bytes handling that decoding here
saves). Not mirrored: Jackson's 20,000,000-character limit on a string value, far beyond the
bridge's payload limit and Kafka's default message size.
"""
from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64
MAX_NUMBER_DIGITS = 1000   # integer + fraction + exponent digits: Jackson's maxNumberLength
MAX_NAME_LENGTH = 50_000   # UTF-16 code units: Jackson's maxNameLength

NOT_JSON = "not_json"
TOO_DEEP = "too_deep"
DUPLICATE_KEY = "duplicate_key"
REASONS = (NOT_JSON, TOO_DEEP, DUPLICATE_KEY)

# Regular expressions both sides run (Python on the bytes, Spark/Java on the decoded text; for
# valid UTF-8 they see the same quotes and backslashes). Possessive quantifiers: linear, and Java
# matches a possessive group iteratively, so a 1 MB payload cannot overflow its stack.
#
# A string: a quote to its closing quote, escapes honoured; an unterminated one runs to the end.
STRING_PATTERN = r'"(?:[^"\\]++|\\[\s\S])*+(?:"|\\|)'
# A lone surrogate escape: the text is read escape by escape from the start (so "\\ud800" is an
# escaped backslash, not an escape), a high surrogate followed by a low one is a pair.
LONE_SURROGATE_PATTERN = (r'^(?:[^\\]++|\\[^u]|\\u(?![dD][89a-fA-F])'
                          r'|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})*+'
                          r'\\u[dD][89a-fA-F]')
# Any surrogate escape at all (a cheap search before the tokenizing one above).
SURROGATE_ESCAPE_PATTERN = r'\\u[dD][89a-fA-F]'
# A number's digits, as Jackson counts them (sign, point and exponent marker excluded).
NUMBER_PATTERN = r'([0-9]+)(?:\.([0-9]*))?(?:[eE][-+]?([0-9]*))?'

_STRING_RE = re.compile(STRING_PATTERN.encode())
_LONE_RE = re.compile(LONE_SURROGATE_PATTERN.encode())
_SURROGATE_ESCAPE_RE = re.compile(SURROGATE_ESCAPE_PATTERN.encode())
_NUMBER_RE = re.compile(NUMBER_PATTERN.encode())
# A number with more than MAX_NUMBER_DIGITS digits has a run of at least a third of them (tried
# from the start of each run only: linear however many runs there are).
_LONG_RUN_RE = re.compile(rb'(?<![0-9])[0-9]{%d}' % (MAX_NUMBER_DIGITS // 3 + 1))
_DIGITS = b"0123456789"
_NOT_BRACKET = bytes(c for c in range(256) if c not in b'[]{}')
_DELTA = bytes.maketrans(b'[{]}', b'\x01\x01\xff\xff')


class JsonRejected(ValueError):
    """Not a record's JSON text; `reason` is one of REASONS, `detail` says what and where."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _DuplicateKey(ValueError):
    pass


class _LongName(ValueError):
    pass


def _pairs(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return d


def _check_names(pairs: list) -> None:
    for k, _ in pairs:
        # A str of n code points is n to 2n UTF-16 code units: encode only the candidates.
        if len(k) > MAX_NAME_LENGTH // 2:
            n = len(k.encode("utf-16-le")) // 2
            if n > MAX_NAME_LENGTH:
                raise _LongName(f"a key of {n} characters > limit {MAX_NAME_LENGTH}")


def _pairs_names(pairs: list) -> dict:
    _check_names(pairs)
    return _pairs(pairs)


def _names_only(pairs: list) -> dict:
    _check_names(pairs)
    return dict(pairs)


def _constant(name: str):
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


# Payloads of at most MAX_NAME_LENGTH bytes cannot hold a key that long: they skip that check.
_STRICT = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)
_STRICT_BIG = json.JSONDecoder(object_pairs_hook=_pairs_names, parse_constant=_constant)
_ANY_KEYS = json.JSONDecoder(parse_constant=_constant)  # duplicates allowed
_ANY_KEYS_BIG = json.JSONDecoder(object_pairs_hook=_names_only, parse_constant=_constant)


def strip_strings(payload: bytes) -> bytes:
    """The payload without its strings (what the depth and number rules look at)."""
    return _STRING_RE.sub(b"", payload)


def depth(payload: bytes) -> int:
    """How deep brackets nest outside strings: the largest count of `[`/`{` minus `]`/`}` over
    every prefix (0 when there are none). Linear, no recursion, any input."""
    deltas = memoryview(strip_strings(payload).translate(_DELTA, _NOT_BRACKET)).cast("b")
    return max(0, max(accumulate(deltas), default=0))


def _long_number(payload: bytes) -> int:
    """Digits of the longest number outside strings when it is past the limit, else 0."""
    if len(payload) - len(payload.translate(None, _DIGITS)) <= MAX_NUMBER_DIGITS:
        return 0  # not that many digits in all
    if not _LONG_RUN_RE.search(payload):
        return 0
    for m in _NUMBER_RE.finditer(strip_strings(payload)):
        n = sum(len(g) for g in m.groups() if g)
        if n > MAX_NUMBER_DIGITS:
            return n
    return 0


def loads(payload: bytes) -> Any:
    """The JSON value of `payload`, or JsonRejected saying why it is not a record's JSON text."""
    if not isinstance(payload, (bytes, bytearray)):
        payload = bytes(payload)
    try:
        text = payload.decode()
    except UnicodeDecodeError as e:
        raise JsonRejected(NOT_JSON, f"not valid UTF-8: {e.reason} at byte {e.start}") from None
    if b"\\" in payload and _SURROGATE_ESCAPE_RE.search(payload) and _LONE_RE.match(payload):
        raise JsonRejected(NOT_JSON, "a \\u escape is a lone surrogate: not valid Unicode")
    if payload.count(b"{") + payload.count(b"[") > MAX_DEPTH:
        d = depth(payload)
        if d > MAX_DEPTH:
            raise JsonRejected(TOO_DEEP, f"nesting depth {d} > limit {MAX_DEPTH}")
    if len(payload) > MAX_NUMBER_DIGITS:
        n = _long_number(payload)
        if n:
            raise JsonRejected(NOT_JSON, f"a number of {n} digits > limit {MAX_NUMBER_DIGITS}")
    big = len(payload) > MAX_NAME_LENGTH
    try:
        return (_STRICT_BIG if big else _STRICT).decode(text)
    except _DuplicateKey as e:
        # Not JSON further on (syntax, NaN, a long key) outranks the duplicate: check it all first.
        try:
            (_ANY_KEYS_BIG if big else _ANY_KEYS).decode(text)
        except ValueError as e2:
            raise _not_json(e2, text) from None
        raise JsonRejected(DUPLICATE_KEY, f"key {str(e)[:80]!r} appears twice in one object") from None
    except ValueError as e:  # JSONDecodeError, NaN/Infinity, a long key
        raise _not_json(e, text) from None


def _not_json(e: ValueError, text: str) -> JsonRejected:
    if isinstance(e, _LongName):
        return JsonRejected(NOT_JSON, str(e))
    if text.startswith("\ufeff"):
        return JsonRejected(NOT_JSON, "starts with a byte order mark (RFC 8259: JSON text has none)")
    return JsonRejected(NOT_JSON, f"{type(e).__name__}: {e}"[:300])


def verdict(payload: bytes) -> str | None:
    """None for a record's JSON text, else the reason (tests and tools)."""
    try:
        loads(payload)
    except JsonRejected as e:
        return e.reason
    return None
