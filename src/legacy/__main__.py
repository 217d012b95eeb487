"""``python -m legacy [--port 8090] [--facade]``: serve the back office (or its strangler
facade) on 127.0.0.1 with uvicorn; its tables are created first if missing."""

from __future__ import annotations

import argparse

import uvicorn

from legacy import app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m legacy")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--facade", action="store_true", help="serve the strangler facade")
    args = parser.parse_args()
    if args.facade:
        uvicorn.run("legacy.facade:app", host="127.0.0.1", port=args.port, log_level="warning")
    else:
        app.create_tables()
        uvicorn.run(app.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
