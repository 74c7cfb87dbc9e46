"""`cinegen serve`: the web UI and HTTP API on one server.

    cinegen serve [--model PATH] [--host 127.0.0.1] [--port 7860] [--history DIR] [--api-key KEY|ENV]
                  [--queue-size 8] [--enhancer auto|none|builtin|openai:MODEL@URL|local:FOLDER] [--no-ui]

Binding to anything but loopback without an API key is refused (pass --insecure to do it anyway): a video
server on an open port is a free GPU for anyone who finds it.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["register_cli", "main", "resolve_api_key", "build_service"]

log = logging.getLogger(__name__)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="web UI + HTTP API (job queue, history, prompt enhancer, long videos)")
    p.add_argument("--model", default=None, help="model folder (diffusers layout); default: the shipped model")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--history", default="outputs/history", help="history folder (videos + settings, kept)")
    p.add_argument(
        "--api-key",
        default=None,
        help="API key: the name of an environment variable holding it, env:NAME, or the key itself "
        "(default: $CINEGEN_API_KEY if set). Required for a non-loopback --host.",
    )
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    p.add_argument("--queue-size", type=int, default=8, help="jobs that may wait; more get HTTP 429")
    p.add_argument(
        "--enhancer",
        default="auto",
        help="prompt enhancer: auto (built-in for the Shapes model), none, builtin, openai:MODEL@URL, local:FOLDER",
    )
    p.add_argument("--enhancer-key-env", default="OPENAI_API_KEY", help="env variable with the enhancer endpoint's key")
    p.add_argument("--max-steps", type=int, default=200, help="server limit on steps per job")
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest image / video upload")
    p.add_argument("--max-history", type=int, default=None, help="keep at most this many history entries")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16")
    p.add_argument("--no-ui", action="store_true", help="HTTP API only")
    p.set_defaults(func=_cmd_serve)


def resolve_api_key(value: str | None, environ: dict[str, str] | None = None) -> str | None:
    """`--api-key`: env:NAME or a set environment variable's name -> its value; anything else is the key."""
    env = dict(os.environ) if environ is None else environ
    if value is None:
        return env.get("CINEGEN_API_KEY") or None
    if value.startswith("env:"):
        name = value[4:]
        if not env.get(name):
            raise ValueError(f"--api-key {value}: environment variable {name} is not set")
        return env[name]
    if value.isidentifier() and env.get(value):
        return env[value]
    if not value:
        return None
    if value.isidentifier() and value.isupper():
        log.warning("--api-key %s looks like an environment variable name but is not set; using it as the key", value)
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_service(args: argparse.Namespace) -> Any:
    """Load the model and wire the service (queue, history, enhancer, limits) from parsed arguments."""
    from cinegen.app.enhance import make_enhancer
    from cinegen.app.history import HistoryStore
    from cinegen.app.service import GenerationService, ServiceLimits
    from cinegen.cli import default_device
    from cinegen.pipeline import DEFAULT_MODEL, load_pipeline, parse_dtype

    model = Path(args.model) if args.model else DEFAULT_MODEL
    if not (model / "model_index.json").is_file():
        hint = "" if args.model else " (the default model is not in this checkout); pass --model PATH"
        raise FileNotFoundError(f"no model folder at {model}{hint}")
    pipe = load_pipeline(model, device=default_device(args.device), dtype=parse_dtype(args.dtype))
    style = pipe.defaults.prompt_enhancer  # "shapes" for the shipped model
    enhancer = make_enhancer(args.enhancer, model_style=style, key_env=args.enhancer_key_env)
    limits = ServiceLimits(max_steps=args.max_steps, max_upload_bytes=int(args.max_upload_mb * 2**20))
    history = HistoryStore(args.history, max_entries=args.max_history)
    if history.skipped:
        log.warning("history %s: skipped %d unreadable entries", args.history, history.skipped)
    return GenerationService(pipe, history, enhancer=enhancer, queue_size=args.queue_size, limits=limits)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        key = resolve_api_key(args.api_key)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not is_loopback(args.host) and not key and not args.insecure:
        print(
            f"error: --host {args.host} is reachable from other machines; set --api-key (or CINEGEN_API_KEY), "
            "or pass --insecure to serve without a key",
            file=sys.stderr,
        )
        return 2
    if args.queue_size < 1:
        print("error: --queue-size must be >= 1", file=sys.stderr)
        return 2
    import uvicorn

    from cinegen.app.server import ServerSettings, create_app

    service = build_service(args)
    app = create_app(service, ServerSettings(api_key=key, ui=not args.no_ui))
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/"
    print(
        f"cinegen serve: {service.describe()['variant']} from {service.pipe.bundle.root}; history {args.history}; "
        f"UI {url if not args.no_ui else 'off'}; API {url}api/ (schema {url}openapi.json); "
        f"key {'required' if key else 'off'}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cinegen")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from cinegen.models.io import ModelFolderError
    from cinegen.pipeline import RequestError

    try:
        return int(args.func(args) or 0)
    except (ModelFolderError, RequestError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
