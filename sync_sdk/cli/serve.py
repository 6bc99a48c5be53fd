"""`sync-sdk serve`: the model behind a Triton Inference Server on HTTP and gRPC (serving/triton_server.py)."""
from __future__ import annotations

import argparse
import os

from sync_sdk.cli.args import add_model_args, finite_float
from sync_sdk.errors import InputError
from sync_sdk.serving.triton_server import ENV_SCRIPT, ServeOptions, serve

DESCRIPTION = f"""\
Serve the model with Triton Inference Server (PyTriton) until Ctrl-C or SIGTERM (then exit 0).

Models: NAME (one 5-s window: offset_sec, class_index, confidence, probabilities, logits, flags; or
synchronizability for a synchronizability model) and NAME_features (visual-encoder features). A request
sends one source: `path` (relative to --media-root; without it paths are refused), `media` (the
file's bytes), or `frames` + `fps` + `audio` + `sample_rate`. Readiness: GET /v2/models/NAME/ready.

Security: paths may not be absolute, contain '..', lead outside --media-root through symlinks, or
name anything but a regular file. Each request runs in a worker process that is killed at --timeout;
requests over --max-request-mb or --max-seconds are refused. Both endpoints listen on --host
(127.0.0.1 = this machine only). Clients cannot load or unload models; Triton's shared-memory, trace
and logging APIs are closed on gRPC but stay open on HTTP (PyTriton has no switch for them): beyond
loopback, put the server behind a proxy that passes only /v2/health/*, /v2/models/*/ready and
/v2/models/*/infer.

Needs `pip install 'sync-sdk[serve]'` in a Python with a shared libpython (Debian's python3.11):
`bash {ENV_SCRIPT}` builds build/serve-venv; run build/serve-venv/bin/sync-sdk serve.
"""


def port(text: str) -> int:
    """argparse type of a TCP port."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1..65535, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type of a count (>= 1)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def register_serve(sub, epilog: str = "") -> None:
    """Add `serve` to the argparse subparsers `sub`."""
    sp = sub.add_parser("serve", help="serve the model over HTTP and gRPC (Triton Inference Server)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION,
                        epilog=epilog)
    d = ServeOptions()
    sp.add_argument("--media-root", metavar="DIR", help="folder whose files clients may name by relative path "
                                                        "(default: no paths, media bytes only)")
    sp.add_argument("--host", default=d.host, help=f"address both endpoints listen on (default {d.host})")
    sp.add_argument("--http-port", type=port, default=d.http_port)
    sp.add_argument("--grpc-port", type=port, default=d.grpc_port)
    sp.add_argument("--metrics-port", type=port, default=None, help="Prometheus metrics on this port (default off)")
    sp.add_argument("--name", default=d.name, help=f"model name (default {d.name}; features: NAME_features)")
    sp.add_argument("--workers", type=positive_int, default=d.workers,
                    help=f"worker processes, each with its own engine: requests run at once (default {d.workers})")
    sp.add_argument("--timeout", type=finite_float, default=d.timeout_s,
                    help=f"seconds one request may take; then its worker is killed (default {d.timeout_s:g})")
    sp.add_argument("--max-request-mb", type=finite_float, default=d.max_request_bytes / 2**20,
                    help="largest media bytes, or frames + audio, of one request in MiB "
                         f"(default {d.max_request_bytes / 2**20:g})")
    sp.add_argument("--max-seconds", type=finite_float, default=d.max_seconds,
                    help=f"longest media sent as arrays, and longest features request, in s (default {d.max_seconds:g})")
    add_model_args(sp, views=True)
    sp.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    if args.timeout <= 0 or args.max_request_mb <= 0 or args.max_seconds <= 0:
        raise InputError("--timeout, --max-request-mb and --max-seconds must be positive numbers")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    engine = {"name_or_path": args.model, "backend": args.backend, "device": args.device,
              "precision": args.precision, "threads": threads}
    if args.allow_unsafe:
        engine["allow_unsafe"] = True
    if args.max_checkpoint_bytes is not None:
        engine["max_checkpoint_bytes"] = args.max_checkpoint_bytes
    if args.shift_views is not None:
        engine["shift_views"] = list(args.shift_views)
    options = ServeOptions(name=args.name, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                           metrics_port=args.metrics_port, media_root=args.media_root, workers=args.workers,
                           timeout_s=args.timeout, max_request_bytes=int(args.max_request_mb * 2**20),
                           max_seconds=args.max_seconds)
    return serve(engine, options)

