"""scripts/openai_server [--host H] [--port N] [--slots N]: load the model as setup() does, serve it with uvicorn."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from ...config import OpenAIServerSettings, Settings


def main(argv: list[str] | None = None) -> None:
    defaults = OpenAIServerSettings.from_env()
    parser = argparse.ArgumentParser(prog="scripts/openai_server", description=__doc__)
    parser.add_argument("--host", default=defaults.host, help=f"default {defaults.host} (OPENAI_SERVER_HOST)")
    parser.add_argument("--port", type=int, default=defaults.port, help=f"default {defaults.port} (OPENAI_SERVER_PORT)")
    parser.add_argument(
        "--slots",
        type=int,
        default=defaults.slots,
        help=f"decode slots; {defaults.slots} (COG_MAX_CONCURRENCY)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import uvicorn

    from ..loader import load_answerer  # torch is imported here
    from ..moderator import build_moderator
    from .app import Service, create_app

    settings = dataclasses.replace(Settings.from_env(), max_concurrency=max(1, args.slots))
    answerer = load_answerer(settings)
    moderator = build_moderator(settings)
    service = Service(answerer, moderator, api_key=defaults.api_key)
    try:
        uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="info")
    finally:
        service.close()
        if moderator is not None:
            moderator.close()
        answerer.close()


if __name__ == "__main__":
    main()
