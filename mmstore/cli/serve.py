"""``mmstore serve``: the HTTP service over a store (:mod:`mmstore.service`). Added to the
``mmstore`` group by :mod:`mmstore.cli.main` (``COMMANDS``)."""

from __future__ import annotations

from pathlib import Path

import click

from mmstore.cli.common import errors


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--no-auth", is_flag=True, help="Allow every request without a key.")
@click.option("--max-body-bytes", type=int, default=None, help="Body size limit.")
@click.option("--max-batch", type=int, default=None, help="Records per request.")
@click.option("--max-k", type=int, default=None, help="Largest k of a search.")
@click.option("--max-text-chars", type=int, default=None, help="Longest text value.")
@click.option("--max-image-pixels", type=int, default=None, help="Most pixels of an image.")
@click.option("--max-audio-seconds", type=float, default=None, help="Longest audio clip (seconds).")
@click.option("--max-inflight", type=int, default=None, help="Requests in hand before 503.")
@click.option("--shutdown-grace", type=float, default=None, help="Seconds to finish requests.")
@click.option("--log-level", default="info", show_default=True)
@errors
def serve(
    path: Path,
    host: str,
    port: int,
    no_auth: bool,
    max_body_bytes: int | None,
    max_batch: int | None,
    max_k: int | None,
    max_text_chars: int | None,
    max_image_pixels: int | None,
    max_audio_seconds: float | None,
    max_inflight: int | None,
    shutdown_grace: float | None,
    log_level: str,
) -> None:
    """Serve the store at PATH over HTTP (the service becomes its single writer)."""
    from mmstore.service.serve import run
    from mmstore.service.settings import Settings

    limits = {
        "max_body_bytes": max_body_bytes,
        "max_batch": max_batch,
        "max_k": max_k,
        "max_text_chars": max_text_chars,
        "max_image_pixels": max_image_pixels,
        "max_audio_seconds": max_audio_seconds,
        "max_inflight": max_inflight,
        "shutdown_grace_s": shutdown_grace,
    }
    settings = Settings(
        host=host,
        port=port,
        auth=not no_auth,
        **{k: v for k, v in limits.items() if v is not None},
    )
    click.echo(f"serving {path} on http://{host}:{port}", err=True)
    run(path, settings=settings, log_level=log_level)


#: the commands this module adds to the ``mmstore`` group
COMMANDS = [serve]
