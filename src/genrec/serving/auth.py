"""Access control for the HTTP service: API keys with scopes, per-key rate limits, exposure check.

Keys come from a YAML/JSON file (``genrec serve --keys FILE``)::

    keys:
      - id: web                  # letters, digits, ``_.-``; shown in logs, scopes event ids
        sha256: 9f86d08...       # sha256 hex of the secret (or ``key: <secret>`` in clear)
        scopes: [recommend]      # recommend, feedback, history, admin
        rate: 50                 # requests per second (optional; default --rate-limit)
        burst: 100               # bucket size (optional; default 2 x rate)

or from ``$GENREC_API_KEYS`` in a compact form, entries separated by spaces or commas:
``web:SECRET:recommend ops:SECRET2:admin+feedback+history``. A client sends its secret as
``Authorization: Bearer SECRET`` or ``X-API-Key: SECRET``.

Scopes: ``recommend`` (``/recommend``, ``/similar``, ``/models``), ``history`` (stored
histories: ``include_history``), ``feedback`` (``/feedback``), ``admin`` (``/admin/reload``,
``/metrics``). Every other route but ``/health`` needs any valid key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

__all__ = ["KEYS_ENV", "SCOPES", "ApiKey", "KeyRing", "RateLimiter", "Scope", "check_exposure",
           "is_loopback", "route_scope"]

Scope = Literal["recommend", "feedback", "history", "admin"]
SCOPES: tuple[str, ...] = get_args(Scope)
KEYS_ENV = "GENREC_API_KEYS"
"""Environment variable with API keys in the compact ``id:secret:scope+scope`` form."""

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ROUTE_SCOPES: dict[str, Scope] = {
    "/recommend": "recommend", "/similar": "recommend", "/models": "recommend",
    "/feedback": "feedback", "/admin/reload": "admin", "/metrics": "admin",
}
OPEN_PATHS = frozenset({"/health"})
"""Routes answered without a key."""


def route_scope(path: str) -> Scope | None:
    """The scope a request to ``path`` needs (None: any valid key)."""
    return _ROUTE_SCOPES.get(path)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One client key.

    Attributes:
        id: Public name of the key (logs, metrics, feedback event-id namespace).
        digest: sha256 hex of the secret.
        scopes: What the key may do.
        rate: Requests per second allowed (None: the service default; 0: unlimited).
        burst: Requests allowed at once (None: twice the rate).
    """

    id: str
    digest: str
    scopes: frozenset[str]
    rate: float | None = None
    burst: float | None = None

    def allows(self, scope: str | None) -> bool:
        """Whether this key may use a route that needs ``scope``."""
        return scope is None or scope in self.scopes

    def entry(self) -> dict[str, Any]:
        """The key in the file format, with its digest (never the secret)."""
        out: dict[str, Any] = {"id": self.id, "sha256": self.digest,
                               "scopes": sorted(self.scopes)}
        if self.rate is not None:
            out["rate"] = self.rate
        if self.burst is not None:
            out["burst"] = self.burst
        return out


def _key_from(entry: Mapping[str, Any], where: str) -> ApiKey:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: each key must be a mapping with id, key or sha256, scopes")
    unknown = set(entry) - {"id", "key", "sha256", "scopes", "rate", "burst"}
    if unknown:
        raise ValueError(f"{where}: unknown key field(s) {sorted(unknown)}")
    kid = str(entry.get("id", ""))
    if not _ID.match(kid):
        raise ValueError(f"{where}: key id {kid!r} must be 1-64 of letters, digits, '_.-'")
    secret, digest = entry.get("key"), entry.get("sha256")
    if (secret is None) == (digest is None):
        raise ValueError(f"{where}: key {kid!r} needs exactly one of 'key' or 'sha256'")
    if secret is not None:
        if len(str(secret)) < 16:
            raise ValueError(f"{where}: key {kid!r} is shorter than 16 characters")
        digest = _digest(str(secret))
    elif not re.fullmatch(r"[0-9a-f]{64}", str(digest).lower()):
        raise ValueError(f"{where}: key {kid!r}: sha256 must be 64 hex digits")
    scopes = entry.get("scopes") or []
    if isinstance(scopes, str):
        scopes = [scopes]
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(f"{where}: key {kid!r} has scopes {scopes}; choose from {list(SCOPES)}")
    rate, burst = entry.get("rate"), entry.get("burst")
    for label, v in (("rate", rate), ("burst", burst)):
        if v is not None and (not isinstance(v, int | float) or v < 0 or not math.isfinite(v)):
            raise ValueError(f"{where}: key {kid!r}: {label} must be a number >= 0")
    return ApiKey(kid, str(digest).lower(), frozenset(scopes), rate, burst)


@dataclass
class KeyRing:
    """The keys a service accepts (empty: the service is open)."""

    keys: list[ApiKey] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = [k.id for k in self.keys]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"API key ids must be unique; repeated: {sorted(dup)}")
        self._by_digest = {k.digest: k for k in self.keys}
        if len(self._by_digest) != len(self.keys):
            raise ValueError("two API keys have the same secret")

    @property
    def enabled(self) -> bool:
        """Whether requests need a key."""
        return bool(self.keys)

    def lookup(self, secret: str | None) -> ApiKey | None:
        """The key whose secret is ``secret`` (compared by sha256 digest), or None."""
        if not secret:
            return None
        return self._by_digest.get(_digest(secret))

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, Any]], where: str = "keys"
                     ) -> KeyRing:
        """Keys from mappings of the file format."""
        return cls([_key_from(e, where) for e in entries])

    @classmethod
    def from_file(cls, path: str | Path) -> KeyRing:
        """Keys from a YAML/JSON file (``keys: [...]``).

        Raises:
            ValueError: If the file is malformed.
            FileNotFoundError: If it does not exist.
        """
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not YAML/JSON: {e}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError(f"{path}: expected a mapping with a 'keys' list")
        return cls.from_entries(doc["keys"], str(path))

    @classmethod
    def from_compact(cls, text: str, where: str = KEYS_ENV) -> KeyRing:
        """Keys from ``id:secret:scope+scope`` entries separated by spaces or commas."""
        entries = []
        for item in re.split(r"[\s,]+", text.strip()):
            if not item:
                continue
            parts = item.split(":")
            if len(parts) != 3:
                raise ValueError(f"{where}: entry {parts[0]!r}... is not id:secret:scope+scope")
            entries.append({"id": parts[0], "key": parts[1], "scopes": parts[2].split("+")})
        return cls.from_entries(entries, where)

    @classmethod
    def load(cls, path: str | Path | None = None, *, env: Mapping[str, str] | None = None
             ) -> KeyRing:
        """The keys of a ``--keys`` file plus those of ``$GENREC_API_KEYS``."""
        env = os.environ if env is None else env
        keys: list[ApiKey] = []
        if path is not None:
            keys += cls.from_file(path).keys
        if env.get(KEYS_ENV, "").strip():
            keys += cls.from_compact(env[KEYS_ENV]).keys
        return cls(keys)

    def entries(self) -> list[dict[str, Any]]:
        """Every key in the file format, with digests only (safe to pass to workers)."""
        return [k.entry() for k in self.keys]


class RateLimiter:
    """Token buckets per key: ``rate`` requests per second, up to ``burst`` at once.

    Used from the event loop only (no lock). Buckets live in one process: when ``share``
    processes serve together (``genrec serve --workers N``), each enforces ``1 / share`` of
    every rate and burst, so together they never allow more than the configured figures (a
    client whose connections all land on one worker gets that worker's share).

    Args:
        default_rate: Requests per second of a key without its own ``rate`` (0: unlimited).
        share: Processes enforcing the limits side by side.
    """

    def __init__(self, default_rate: float, share: int = 1) -> None:
        if share < 1:
            raise ValueError(f"share must be >= 1, got {share}")
        self.default_rate = default_rate
        self.share = share
        self._buckets: dict[str, tuple[float, float]] = {}  # id -> (tokens, last time)

    def take(self, key: ApiKey, now: float | None = None) -> float:
        """Spend one token of ``key``'s bucket.

        Returns:
            0 if the request may go ahead, else the seconds until a token is available.
        """
        rate = self.default_rate if key.rate is None else key.rate
        if rate <= 0:
            return 0.0
        burst = max(1.0, (key.burst if key.burst is not None else 2 * rate) / self.share)
        rate /= self.share
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key.id, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[key.id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key.id] = (tokens, now)
        return (1.0 - tokens) / rate


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keys: KeyRing, *, insecure: bool) -> str | None:
    """Refuse to expose an open service.

    Returns:
        A warning to log (the service runs open on loopback), or None.

    Raises:
        ValueError: If ``host`` is not loopback, no key is configured and ``insecure`` is off.
    """
    if keys.enabled:
        return None
    if not is_loopback(host):
        if not insecure:
            raise ValueError(
                f"refusing to bind {host} without API keys: anyone who can reach it could read "
                "histories, write feedback and reload models. Configure keys (--keys FILE or "
                f"${KEYS_ENV}) or pass --insecure to run open on purpose")
        return f"serving {host} WITHOUT API keys (--insecure): every endpoint is open"
    return (f"no API keys configured: every endpoint on {host} is open (fine for local "
            "development; configure --keys before exposing the service)")
