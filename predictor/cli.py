"""``python -m server kserve``: serve the built archives on KServe's model server, in the foreground.

Loads every archive of ``--model-store`` (or those ``--models`` names), opens each model's
engine (measured once per machine and cached, as on TorchServe), then serves the Open
Inference Protocol v2 over REST (``--http-port``) and gRPC (``--grpc-port``) on ``--host``
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import sys
from pathlib import Path

from core.paths import BUILD_DIR, MODEL_STORE

DEFAULT_HTTP_PORT, DEFAULT_GRPC_PORT = 8090, 8091
#: How long the process may take to exit once the server has stopped.
EXIT_TIMEOUT_S = 15

logger = logging.getLogger("kserve.predictor")  # under KServe's configured logger


def parser() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(prog="python -m server kserve",
                                      description="Serve the built archives on KServe's model server.")
    options.add_argument("--host", default="127.0.0.1", help="address both listeners bind to (default loopback)")
    options.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    options.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT)
    options.add_argument("--model-store", type=Path, default=MODEL_STORE)
    options.add_argument("--runtime-dir", type=Path, default=BUILD_DIR / "kserve",
                         help="where the archives' model files are unpacked")
    options.add_argument("--models", default="all", help="comma-separated model names, or 'all' (default)")
    options.add_argument("--grace-period", type=int, default=30,
                         help="seconds in-flight requests get to finish after SIGTERM")
    return options


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # kserve parses sys.argv when imported (its own options); ours are not its.
    sys.argv = sys.argv[:1]
    from predictor import archives, models
    from predictor.server import StyleModelServer

    names = None if args.models.strip().lower() in ("", "all") else [n.strip() for n in args.models.split(",") if n]
    try:
        found = archives.load_store(args.model_store, args.runtime_dir, names)
    except archives.ArchiveError as error:
        print(f"python -m server kserve: {error}", file=sys.stderr)
        return 2
    if names is None:  # "all": every archive of a family the predictor serves
        found = [archive for archive in found if archive.family in models.FAMILIES]
    try:
        served = [models.model_for(archive) for archive in found]
    except ValueError as error:
        print(f"python -m server kserve: {error}", file=sys.stderr)
        return 2
    server = StyleModelServer(args.host, args.http_port, args.grpc_port, grace_period=args.grace_period)
    for model in served:
        model.load()
    logger.info("serving %s on http://%s:%d (gRPC %s:%d)", ", ".join(m.name for m in served), args.host,
                args.http_port, args.host, args.grpc_port)
    server.start(served)  # returns once SIGTERM/SIGINT has stopped both listeners
    logger.info("stopped")
    # Should anything hold up the interpreter's exit now, print every thread's stack and
    # end anyway rather than wait for the SIGKILL at the end of the grace period.
    faulthandler.dump_traceback_later(EXIT_TIMEOUT_S, exit=True)
    return 0
