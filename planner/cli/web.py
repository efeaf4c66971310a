"""``planner serve``: the plans under a folder as web pages for any screen of the procedure room."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{n}: a port is 0 to 65535 (0: any free one)")
    return n


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import aiohttp  # noqa: F401
        import trame  # noqa: F401
        import trame_vtk  # noqa: F401
        import trame_vuetify  # noqa: F401
    except ImportError as exc:
        raise InputError(f"planner serve needs trame, trame-vtk and trame-vuetify ({exc.name} is missing): "
                         "pip install 'trame' 'trame-vtk' 'trame-vuetify'") from None
    from ..web.server import serve

    serve(args.root, host=args.host, port=args.port, allow_replan=args.allow_replan, token=args.token,
          library=args.library, record_choices=args.record_choices)
    return 0


def add_commands(sub: Any) -> None:
    q = sub.add_parser("serve", help="serve the plans under ROOT as web pages: a worklist and each plan's review")
    q.add_argument("root", help="folder holding plan folders (searched recursively)")
    q.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080; 0: any free one)")
    q.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; any other address needs the "
                        "access token printed at start)")
    q.add_argument("--allow-replan", action="store_true",
                   help="let the review page move the target and plan again (in memory; the plan folder is not "
                        "changed)")
    q.add_argument("--record-choices", action="store_true",
                   help="let the review page record the trajectory performed (the plan folder's choice.json, kept "
                        "by planner library add; nothing else is written)")
    q.add_argument("--library", metavar="ROOT|URL",
                   help="a case library (planner library): each review lists its most similar cases")
    q.add_argument("--token", help="the access token to ask for (default: drawn at start when --host is not "
                                   "loopback)")
    q.set_defaults(func=cmd_serve)
