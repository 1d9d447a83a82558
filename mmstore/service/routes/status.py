"""``/health`` and ``/metrics``: the service's own state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mmstore._version import __version__
from mmstore.service.context import SERVICE, Service, need
from mmstore.service.models import ERRORS

router = APIRouter(tags=["service"])


@router.get("/health")
def health(s: Service = SERVICE) -> dict[str, Any]:
    """Liveness, version and the configured limits (no key needed)."""
    return {
        "status": "ok",
        "version": __version__,
        "limits": s.settings.limits(),
        "auth": s.settings.auth,
    }


@router.get("/metrics", dependencies=[need("admin")], responses=ERRORS)
def metrics_route(s: Service = SERVICE) -> dict[str, Any]:
    """Request counts per route and status, errors per route, latency percentiles."""
    return s.metrics.snapshot()
