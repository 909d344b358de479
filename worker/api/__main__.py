"""`python -m worker.api [--host H] [--port P]`: the api process (see worker.api.server)."""

from __future__ import annotations

import argparse
import sys

from config import logging as tw_logging
from config.settings import Settings, SettingsError
from worker.api.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.api", description=__doc__)
    parser.add_argument("--host", help="listen address (default TOKENWORKER_API_HOST)")
    parser.add_argument("--port", type=int, help="listen port (default TOKENWORKER_API_PORT)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"tokenworker api: {error}", file=sys.stderr)
        return 2
    tw_logging.configure(settings.log_format)
    serve(settings, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
