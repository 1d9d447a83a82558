"""``/collections``: list, create, describe and drop collections."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mmstore.service.context import SERVICE, Service, may_see, need
from mmstore.service.models import ERRORS, CreateCollection
from mmstore.service.wire import jsonable

router = APIRouter(tags=["collections"], responses=ERRORS)


@router.get("/collections", dependencies=[need("read")])
def list_collections(request: Request, s: Service = SERVICE) -> dict[str, list[str]]:
    """The collections the request's key may see (all of them without auth)."""
    key = getattr(request.state, "key", None)
    names = s.store.collections()
    return {"collections": [n for n in names if may_see(key, n)]}


@router.post("/collections", status_code=201, dependencies=[need("admin")])
def create_collection(body: CreateCollection, s: Service = SERVICE) -> dict[str, Any]:
    def go() -> dict[str, Any]:
        c = s.store.create_collection(
            body.name, body.encoders, options=body.options, index=body.index, exist_ok=body.exist_ok
        )
        return c.info()

    return jsonable(s.write(go))


@router.get("/collections/{c}", dependencies=[need("read")])
def collection_info(c: str, s: Service = SERVICE) -> dict[str, Any]:
    return jsonable(s.col(c).info())


@router.delete("/collections/{c}", dependencies=[need("admin")])
def drop_collection(c: str, s: Service = SERVICE) -> dict[str, str]:
    s.write(lambda: s.store.drop_collection(c))
    return {"dropped": c}
