"""Service settings from the environment: the admin token, CORS origins and request size limits.

- `RECSYS_ADMIN_TOKEN` (default unset: admin endpoints disabled, 403): bearer token for `POST /admin/reload`;
  at least 16 characters.
- `RECSYS_CORS_ORIGINS` (default unset: no CORS headers): comma-separated origins allowed to call the API
  from a browser (`https://app.example.com`, or `*`).
- `RECSYS_MAX_BODY_BYTES` (default 65536): larger request bodies are 413.
- `RECSYS_MAX_URL_BYTES` (default 4096): longer path + query strings are 414.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

MIN_TOKEN_CHARS = 16
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")


@dataclass(frozen=True)
class ServiceSettings:
    admin_token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 64 * 1024
    max_url_bytes: int = 4096

    def __post_init__(self) -> None:
        problems = []
        if self.admin_token is not None and (
            len(self.admin_token) < MIN_TOKEN_CHARS
            or not self.admin_token.isascii()
            or not self.admin_token.isprintable()
        ):
            problems.append(f"RECSYS_ADMIN_TOKEN must be at least {MIN_TOKEN_CHARS} printable ASCII characters")
        bad = [o for o in self.cors_origins if o != "*" and not _ORIGIN.match(o)]
        if bad:
            problems.append(
                f"RECSYS_CORS_ORIGINS: {bad} are not origins like https://app.example.com (scheme://host[:port]) or *"
            )
        if not 1024 <= self.max_body_bytes <= 64 * 1024 * 1024:
            problems.append(
                f"RECSYS_MAX_BODY_BYTES must be between 1024 and {64 * 1024 * 1024}, got {self.max_body_bytes}"
            )
        if not 256 <= self.max_url_bytes <= 65536:
            problems.append(f"RECSYS_MAX_URL_BYTES must be between 256 and 65536, got {self.max_url_bytes}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        defaults = cls()

        def integer(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{name} must be a whole number of bytes, got {raw!r}") from None

        token = env.get("RECSYS_ADMIN_TOKEN", "").strip() or None
        origins = tuple(o.strip().rstrip("/") for o in env.get("RECSYS_CORS_ORIGINS", "").split(",") if o.strip())
        return cls(
            admin_token=token,
            cors_origins=origins,
            max_body_bytes=integer("RECSYS_MAX_BODY_BYTES", defaults.max_body_bytes),
            max_url_bytes=integer("RECSYS_MAX_URL_BYTES", defaults.max_url_bytes),
        )
