"""Service settings: where it listens, whether keys are required, and the request limits
that ``/health`` reports."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    """Settings of one service process; the limits are checked before a store call
    (the value limits by :mod:`mmstore.service.limits`)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    #: require an API key (``Authorization: Bearer <key>``) on every route but /health
    auth: bool = True
    #: request bodies larger than this are answered 413 before they are read
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1)
    #: records per ingest request, ids per get/delete request, records per predict request
    max_batch: int = Field(1000, ge=1)
    #: the largest ``k`` of a search
    max_k: int = Field(1000, ge=1)
    #: the longest text value of a record or a query (characters)
    max_text_chars: int = Field(100_000, ge=1)
    #: the most pixels of an image sent as bytes (read from its header, before decoding)
    max_image_pixels: int = Field(40_000_000, ge=1)
    #: the longest audio clip sent as bytes, in seconds (read from its header)
    max_audio_seconds: float = Field(600.0, gt=0)
    #: requests in hand at once (running or waiting for a thread); past it, 503 Retry-After
    max_inflight: int = Field(64, ge=1)
    #: on SIGTERM or Ctrl-C, how long requests in flight may take to finish (seconds)
    shutdown_grace_s: float = Field(30.0, gt=0)
    #: latency samples kept per route for the percentiles of /metrics
    metrics_window: int = Field(1000, ge=10)

    def limits(self) -> dict[str, Any]:
        """The limits as ``/health`` reports them."""
        return {
            "max_body_bytes": self.max_body_bytes,
            "max_batch": self.max_batch,
            "max_k": self.max_k,
            "max_text_chars": self.max_text_chars,
            "max_image_pixels": self.max_image_pixels,
            "max_audio_seconds": self.max_audio_seconds,
            "max_inflight": self.max_inflight,
        }
