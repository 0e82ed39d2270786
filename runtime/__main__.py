"""``python -m runtime``: serve the committed model. Flags override ``EDGE_`` environment variables."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, get_args

from pydantic import ValidationError

from runtime.errors import EdgeError
from runtime.settings import Settings

log = logging.getLogger("runtime")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime",
        description="Serve the NeuralTrade Edge signal model over HTTP. Every flag can also be set with an "
        "EDGE_-prefixed environment variable (e.g. --max-batch-size = EDGE_MAX_BATCH_SIZE).",
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} [env EDGE_{name.upper()}]"
        if field.annotation in (bool, bool | None):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            choices = get_args(field.annotation) if name in ("precision", "provider", "log_level") else None
            parser.add_argument(flag, default=None, choices=choices or None, help=help_text, metavar=name.upper())
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    args = vars(build_parser().parse_args(argv))
    overrides: dict[str, Any] = {k: v for k, v in args.items() if v is not None}
    if environ is not None:
        # Settings reads os.environ; tests pass their own mapping instead of patching globals.
        with _environ(environ):
            return Settings(**overrides)
    return Settings(**overrides)


class _environ:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def __enter__(self) -> None:
        self.saved = {k: v for k, v in os.environ.items() if k.startswith("EDGE_")}
        for k in self.saved:
            del os.environ[k]
        os.environ.update(self.values)

    def __exit__(self, *exc: object) -> None:
        for k in [k for k in os.environ if k.startswith("EDGE_")]:
            del os.environ[k]
        os.environ.update(self.saved)


def main(argv: Sequence[str] | None = None) -> int:
    from runtime import logs

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["replay"]:
        from runtime import replay

        return replay.main(args[1:])
    if args[:1] == ["serve"]:  # `python -m runtime serve ...` is the default command spelled out
        args = args[1:]

    try:
        settings = load_settings(args)
    except ValidationError as e:
        for err in e.errors(include_url=False, include_input=False):
            field = ".".join(str(p) for p in err["loc"])
            print(
                f"error: setting '{field}' (--{field.replace('_', '-')} / EDGE_{field.upper()}): {err['msg']}",
                file=sys.stderr,
            )
        return 2
    logs.configure(settings.log_level)
    try:
        keys = settings.all_api_keys()
    except ValueError as e:
        log.error(str(e))
        return 2
    if not keys:
        if not settings.is_loopback() and not settings.allow_unauthenticated:
            log.error(
                "no API keys configured (EDGE_API_KEYS or EDGE_API_KEYS_FILE): refusing to serve "
                "unauthenticated on %s; bind a loopback address or pass --allow-unauthenticated",
                settings.host,
            )
            return 2
        log.warning("no API keys configured: serving WITHOUT authentication on %s", settings.host)

    import uvicorn

    from runtime.server.serve import serve

    try:
        return serve(settings, uvicorn)
    except EdgeError as e:
        log.error("cannot start: %s", e.message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
