"""``python -m server start|stop|status``: run TorchServe with this project's settings.

``start`` renders ``config.properties`` (ports and absolute model store filled in), starts
TorchServe detached, waits until every model has a ready worker, and prints a curl line.
The same code starts the test suite's server, so tests exercise the shipped settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.launch import ROOT, Server, default_ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--runtime-dir", type=Path, default=ROOT / "build" / "server")
    parser.add_argument("--token-auth", action="store_true", help="require TorchServe's API tokens")
    args = parser.parse_args(argv)
    server = Server(args.runtime_dir, args.model_store, default_ports(), token_auth=args.token_auth)
    if args.command == "stop":
        print("stopped" if server.stop() else "not running")
        return 0
    if args.command == "status":
        print(server.status())
        return 0
    server.start()
    models = server.wait_ready()
    style = "udnie" if "udnie" in models else next(iter(models))
    key = server.inference_key()
    auth = f' -H "Authorization: Bearer {key}"' if key else ""
    print(f"TorchServe is up: {', '.join(models)} (logs: {server.log_dir})")
    print("Try:")
    print(
        f'  curl -sS{auth} -H "Content-Type: image/jpeg" --data-binary @photo.jpg '
        f"{server.inference_url}/predictions/{style} -o painting.png"
    )
    print("Stop it with: .venv/bin/python -m server stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
