"""API keys of the service: where they come from, how a request is checked, what identifies a client.

Keys never enter a config, a command line or a log. `steve1 serve` (or Serve's `app_builder`) reads them in the
process that builds the app, from the environment variable named by `api_keys_env` (comma-separated) and/or the
file `api_keys_file` (one key per line, `#` comments: e.g. a mounted Kubernetes Secret). Only their SHA-256
digests travel to the ingress replicas. A request's key is hashed and compared with every digest in constant
time (`hmac.compare_digest`, no early exit), and the client is then known by `key_id` (the digest's first 16 hex
digits), which owns the sessions and rollouts it starts. Without keys every client is `anonymous`, which only a
loopback bind (or an explicit `insecure=true`) allows.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from pathlib import Path

ANONYMOUS = "anonymous"
MIN_KEY_LENGTH = 16


class AuthConfigError(ValueError):
    """The keys or the bind address are unsafe or unreadable; the message says what to change."""


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_id(key_digest: bytes) -> str:
    """The client's name in records and logs: not the key, not enough of its hash to test guesses offline."""
    return key_digest.hex()[:16]


def read_keys(env_var: str | None, path: str | None) -> list[str]:
    """The API keys from `$env_var` (comma-separated) and `path` (one per line); checked, deduplicated."""
    keys: list[str] = []
    if env_var and os.environ.get(env_var):
        keys += [k.strip() for k in os.environ[env_var].split(",")]
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise AuthConfigError(f"api_keys_file {path!r} cannot be read: {exc.strerror or exc}") from None
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise AuthConfigError(f"api_keys_file {path!r} has no key (one per line)")
    keys = [k for k in keys if k]
    short = [i for i, k in enumerate(keys) if len(k) < MIN_KEY_LENGTH or any(c.isspace() for c in k)]
    if short:
        where = f"${env_var}" + (f" / {path}" if path else "")
        raise AuthConfigError(f"API key #{short[0] + 1} from {where} is shorter than {MIN_KEY_LENGTH} characters or "
                              f"contains spaces; use e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return list(dict.fromkeys(keys))


def key_digests(env_var: str | None, path: str | None) -> list[bytes]:
    return [digest(k) for k in read_keys(env_var, path)]


def identify(given: str | None, digests: list[bytes]) -> str | None:
    """The client id of a presented key, or None when it matches no key. Constant time in the key's content:
    every digest is compared, whatever matched before."""
    if not given:
        return None
    d = digest(given)
    found = None
    for ref in digests:
        if hmac.compare_digest(d, ref) and found is None:
            found = key_id(ref)
    return found


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False


def check_bind(host: str, has_keys: bool, insecure: bool) -> None:
    """Refuse to listen beyond this machine without keys, unless the operator said `insecure=true`."""
    if has_keys or insecure or is_loopback(host):
        return
    raise AuthConfigError(
        f"refusing to serve on host {host!r} without an API key: anyone who can reach the port could use the "
        f"service. Set the keys in $STEVE1_API_KEYS or api_keys_file=<file> (one key per line), bind 127.0.0.1, "
        f"or say insecure=true")
