"""What every command of the CLI shares: the error wrapper (one line on stderr, exit code
1, the holding service named for a locked store) and the parser of JSON options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from mmstore.errors import InvalidInputError, MMStoreError, StoreLockedError


def errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn mmstore errors into one line on stderr and exit code 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (MMStoreError, OSError) as e:  # a missing file, no permission, a full disk
            if click.get_current_context().find_root().params.get("traceback"):
                raise
            click.echo(f"error: {e}{holder(e)}", err=True)
            sys.exit(1)

    return wrapper


def holder(error: BaseException) -> str:
    """For a locked store: the service that says it holds it, and how to reach it."""
    if not isinstance(error, StoreLockedError):
        return ""
    from mmstore.service.serve import service_address

    url = service_address(error.path)
    if url is None:
        return ""
    return f"; the mmstore service at {url} holds it: use mmstore.Client({url!r}, key) or HTTP"


def json_arg(option: str, value: str) -> Any:
    """The JSON value of a command-line option, or an InvalidInputError naming it."""
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{option} is not valid JSON: {e.msg}") from e
