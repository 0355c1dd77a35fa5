"""``python -m server start|stop|status``: run TorchServe with this project's settings.

``start`` renders ``config.properties`` (ports and absolute model store filled in), starts
TorchServe detached, waits until every model has a ready worker, and prints a curl line.
The same code starts the test suite's server, so tests exercise the shipped settings.
``kserve`` serves the same archives on KServe's model server instead, in the foreground
(``predictor.cli``; ``python -m server kserve --help``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.paths import MODEL_STORE, SERVER_DIR
from core.photos import content_photos, paintings
from server.launch import Server, default_ports


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kserve"]:
        from predictor.cli import main as kserve_main

        return kserve_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m server")
    parser.add_argument("command", choices=["start", "stop", "status", "kserve"])
    parser.add_argument("--model-store", type=Path, default=MODEL_STORE)
    parser.add_argument("--runtime-dir", type=Path, default=SERVER_DIR)
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
    photo, painting = content_photos()[0], paintings()[0]  # real images any install has
    print(f"TorchServe is up: {', '.join(models)} (logs: {server.log_dir})")
    print("Try:")
    print(
        f'  curl --fail-with-body -sS{auth} -H "Content-Type: image/jpeg" --data-binary @{photo} '
        f"{server.inference_url}/predictions/{style} -o painting.png"
    )
    if "gatys" in models:
        print(f"  curl --fail-with-body -sS{auth} -F content=@{photo} -F style=@{painting} "
              f"{server.inference_url}/predictions/gatys -o gatys.png   # the original Gatys algorithm")
    print("Stop it with: .venv/bin/python -m server stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
