"""Run the local AWS: ``python -m replwatch_localaws --host 127.0.0.1 --port 4566``.

moto's own server (``moto.server.main``) with our patches installed first and
our ``/_localaws/*`` endpoints in front of its dispatcher; threaded, like
``moto_server``, so a blob download or a flush does not block other calls.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m replwatch_localaws")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("LOCAL_AWS_PORT", "4566")))
    args = parser.parse_args(argv)

    # moto builds some URLs (e.g. SQS queue URLs) from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # One line per request costs a sixth of the server's time in a load run: on request only.
    if not os.environ.get("LOCAL_AWS_REQUEST_LOG"):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from . import install

    install()

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    from .control import LocalAwsApp

    def stop(signum: int, frame: Any) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    moto_app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, LocalAwsApp(moto_app), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
