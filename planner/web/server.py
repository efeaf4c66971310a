"""``planner serve``: the worklist of the plans under a folder, and each plan's review page.

One front server (aiohttp, the engine trame itself runs on) is the only door: it serves the
worklist, checks the access token, and forwards ``/case/<key>/...`` (HTTP and the page's
websocket) to the review process of that plan (:mod:`planner.web.review`, one per open plan,
listening on loopback only, started on first open and stopped after it sits unused). A spare
review process is kept loaded so a plan opens without waiting for its libraries.

Security: on 127.0.0.1 (the default) nothing more is asked. On any other address an access
token is drawn and printed with the URL; a request without it (in ``?token=`` once, then an
HttpOnly cookie) gets 403. URLs carry opaque keys, never a folder name or a patient's
identifier; the only files served from a plan folder are its report, its images and its check
pages, resolved inside the folder. Run it behind a TLS reverse proxy on a network (README).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import os
import re
import secrets
import signal
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aiohttp import ClientSession, ClientTimeout, WSMsgType, web

from ..errors import InputError
from .worklist import Worklist



def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

COOKIE = "planner_token"
START_TIMEOUT_S = 120.0
MAX_REVIEWS = 8
#: Seconds after a review is up that the next spare starts loading (not while the browser loads).
SPARE_AFTER_S = 4.0
#: Seconds a review that failed to start is said to have failed without trying again.
FAILED_FOR_S = 10.0
#: Files of a plan folder the pages may link to (relative paths, matched whole).
SERVED = re.compile(r"^(report\.pdf|report\.html|scene3d\.html|images/[A-Za-z0-9_.-]+\.png|"
                    r"checks/\d{2,4}/[A-Za-z0-9_.-]+\.(png|pdf|html)|checks/index\.html)$")
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
       "transfer-encoding", "upgrade", "host", "content-length", "content-encoding", "cookie"}
SECURITY_HEADERS = {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "SAMEORIGIN"}


class ReviewFailed(Exception):
    pass


@dataclass
class Review:
    key: str
    folder: Path
    process: asyncio.subprocess.Process
    port: int

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


class Reviews:
    """The review processes: one per open plan, and one spare waiting with its libraries loaded."""

    def __init__(self, allow_replan: bool, library: str | None = None, record_choices: bool = False):
        self.allow_replan = allow_replan
        self.library = library
        self.record_choices = record_choices
        self.open: dict[str, Review] = {}
        self._spare: asyncio.subprocess.Process | None = None
        self._spare_ready: asyncio.Future[bool] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # key -> (when, why) of its last failed start
        self._closing = False

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "planner.web.review", "--wait", "--port", "0"]
        cmd += ["--allow-replan"] if self.allow_replan else []
        cmd += ["--record-choices"] if self.record_choices else []
        return cmd + (["--library", self.library] if self.library else [])

    async def start_spare(self) -> None:
        if self._closing or (self._spare is not None and self._spare.returncode is None):
            return  # one spare at a time
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._spare = await asyncio.create_subprocess_exec(
            *self._command(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)

    def start(self, key: str, folder: Path) -> None:
        """Start the review of ``folder`` now, without waiting for it (its page's files are being
        served); whoever needs it next waits for it, or hears why it failed (port_for)."""
        r = self.open.get(key)
        if r is not None and r.alive:
            return
        task = asyncio.ensure_future(self.port_for(key, folder))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # said again by port_for to its caller

    async def _take_spare(self) -> asyncio.subprocess.Process:
        if self._spare is None or self._spare.returncode is not None:
            await self.start_spare()
        proc, self._spare = self._spare, None
        assert proc is not None
        return proc

    async def port_for(self, key: str, folder: Path) -> int:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            r = self.open.get(key)
            if r is not None and r.alive:
                return r.port
            self.open.pop(key, None)
            failed = self._failed.get(key)
            if failed is not None and asyncio.get_running_loop().time() - failed[0] < FAILED_FOR_S:
                raise ReviewFailed(failed[1])  # the page's next requests hear it, without another try
            try:
                return await self._start(key, folder)
            except ReviewFailed as exc:
                self._failed[key] = (asyncio.get_running_loop().time(), str(exc))
                raise

    async def _start(self, key: str, folder: Path) -> int:
        if len([x for x in self.open.values() if x.alive]) >= MAX_REVIEWS:
            raise ReviewFailed(f"{MAX_REVIEWS} reviews are open already; close one (it stops after it "
                               "sits unused) and try again")
        proc = await self._take_spare()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((str(folder) + "\n").encode())
        await proc.stdin.drain()
        try:
            port = await self._wait_ready(proc)
        finally:  # the next plan opens as fast; loaded once this one is up (2 cores: not side by side)
            asyncio.get_running_loop().call_later(SPARE_AFTER_S, lambda: asyncio.ensure_future(self.start_spare()))
        review = Review(key, folder, proc, port)
        self.open[key] = review
        asyncio.ensure_future(self._drain_stderr(proc))
        return port

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> int:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            left = deadline - loop.time()
            if left <= 0:
                proc.kill()
                raise ReviewFailed(f"the review did not start within {START_TIMEOUT_S:.0f} s")
            try:
                line = (await asyncio.wait_for(proc.stdout.readline(), left)).decode("utf-8", "replace").strip()
            except asyncio.TimeoutError:
                continue
            if not line:
                err = b""
                if proc.stderr is not None:
                    with suppress(Exception):
                        err = await asyncio.wait_for(proc.stderr.read(), 5)
                tail = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()][-3:]
                raise ReviewFailed("the review process stopped: " + (" / ".join(tail) or "no reason given"))
            if line.startswith("READY "):
                return int(line.split()[1])
            if line.startswith("FAILED"):
                raise ReviewFailed(line[len("FAILED"):].strip() or "the plan could not be opened")

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """Read what a running review writes to its standard error, so that a full pipe never
        stops it (what it says before it is up is in the 503 page; after, it is VTK's chatter)."""
        if proc.stderr is not None:
            while await proc.stderr.readline():
                pass

    async def close(self) -> None:
        self._closing = True
        procs = [r.process for r in self.open.values()] + ([self._spare] if self._spare else [])
        for p in procs:
            if p.returncode is None:
                with suppress(ProcessLookupError):
                    p.terminate()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0  # a review holds nothing to save: a short grace, then it is killed
        for p in procs:
            with suppress(Exception):
                await asyncio.wait_for(p.wait(), max(0.1, deadline - loop.time()))
            if p.returncode is None:
                with suppress(ProcessLookupError):
                    p.kill()
                with suppress(Exception):
                    await asyncio.wait_for(p.wait(), 5)


# --- pages -------------------------------------------------------------------------------------
PAGE_CSS = """
body { background:#0b0d12; color:#f2f2f2; font-family: 'DejaVu Sans', Arial, sans-serif; font-size:22px; margin:0; }
header { padding:16px 24px; background:#171b24; font-size:30px; font-weight:700; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:14px 18px; border-bottom:1px solid #2a3040; }
th { color:#9fb3c8; font-weight:400; font-size:18px; }
tr.case:hover { background:#1c2230; }
a.open { display:inline-block; padding:12px 24px; background:#ffd600; color:#000; border-radius:6px;
         text-decoration:none; font-weight:700; }
.bad { color:#ff6b6b; font-weight:700; } .ok { color:#7be07b; } .muted { color:#9fb3c8; }
.empty { padding:40px 24px; }
"""


def worklist_page(wl: Worklist) -> str:
    rows = []
    for e in wl.entries():
        esc = html.escape
        if e.status == "unreadable":
            rows.append(f'<tr class="case" id="case-{e.key}"><td colspan="5" class="bad">unreadable plan: '
                        f'{esc(e.problem)}</td><td></td></tr>')
            continue
        verdict = '<span class="ok">feasible</span>' if e.feasible else '<span class="bad">NO SAFE TRAJECTORY</span>'
        rows.append(
            f'<tr class="case" id="case-{e.key}"><td>{esc(e.patient)}<div class="muted">{esc(e.study_date)}</div></td>'
            f'<td>{esc(e.procedure)}<div class="muted">{esc(e.target)}</div></td>'
            f'<td>{esc(e.created.replace("T", " ")[:16])}</td><td class="status">{esc(e.status)}</td><td>{verdict}</td>'
            f'<td><a class="open" href="case/{e.key}/">open</a></td></tr>')
    body = ("<table><tr><th>Patient</th><th>Procedure</th><th>Planned</th><th>Status</th><th>Plan</th><th></th></tr>"
            + "".join(rows) + "</table>") if rows else '<div class="empty">No plans under this folder yet.</div>'
    return ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            "<meta http-equiv='refresh' content='5'><title>planner worklist</title>"
            f"<style>{PAGE_CSS}</style></head><body><header>Worklist <span class='muted' style='font-size:18px'>"
            f"{len(rows)} plan(s), newest first</span></header>{body}</body></html>")


def message_page(status: int, text: str) -> web.Response:
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>planner</title><style>{PAGE_CSS}</style>"
            f"</head><body><header>{status}</header><div class='empty'>{html.escape(text)}</div>"
            "<div class='empty'><a class='open' href='/'>worklist</a></div></body></html>")
    return web.Response(status=status, text=page, content_type="text/html", headers=SECURITY_HEADERS)


# --- the review page's static files ------------------------------------------------------------
#: Where the index page asks whether its review came up (204) or why it did not (the 503 page).
STATUS = "__planner_status"


class PageFiles:
    """The review page's static files: the trame client and the scripts and styles of the widget
    modules the review uses, exactly the files its process would serve. The front serves them
    itself, so a browser loads and compiles the page while the plan's review process is still
    loading the plan (it connects when the review is up); the index page preloads the modules'
    files and shows the 503 page if the review cannot start."""

    def __init__(self) -> None:
        from trame_client.module import vue3
        from trame_vtk.modules import common as vtk_module
        from trame_vuetify.module import v3 as vuetify_module

        self.www = Path(vue3.www).resolve()
        self.dirs: dict[str, Path] = {}
        preload: list[str] = []
        for m in (vuetify_module, vtk_module):
            self.dirs.update({k: Path(v).resolve() for k, v in m.serve.items()})
            preload += [f'<link rel="preload" as="script" href="{html.escape(u)}">' for u in getattr(m, "scripts", [])]
            preload += [f'<link rel="preload" as="style" href="{html.escape(u)}">' for u in getattr(m, "styles", [])]
        status = (f'<script>fetch("{STATUS}").then(r => r.status === 204 ? "" : r.text()).then(t => {{ if (t) '
                  '{ document.open(); document.write(t); document.close(); } });</script>')
        index = (self.www / "index.html").read_text("utf-8")
        self.index = index.replace("</head>", "\n".join(preload + [status]) + "\n</head>", 1)

    def path(self, tail: str) -> Path | None:
        """The file of ``tail`` (a path under ``/case/<key>/``, already free of ``..``), or None."""
        head, _, rest = tail.partition("/")
        base, rel = (self.dirs[head], rest) if head in self.dirs else (self.www, tail)
        if not rel or rel == "index.html":
            return None
        p = (base / rel).resolve()
        return p if p.is_relative_to(base) and p.is_file() else None


# --- the front server ---------------------------------------------------------------------------
def _bad_tail(tail: str) -> bool:
    parts = tail.replace("\\", "/").split("/")
    return any(p in ("..", ".") or p.startswith("~") for p in parts) or "\x00" in tail or tail.startswith("/")


def make_app(root: str | os.PathLike[str], token: str | None = None, allow_replan: bool = False,
             library: str | None = None,
             record_choices: bool = False) -> web.Application:
    worklist = Worklist(root, secrets.token_bytes(32))
    reviews = Reviews(allow_replan, library, record_choices)
    page_files = PageFiles()

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if token:
            given = request.query.get("token")
            if given is not None and hmac.compare_digest(given.encode(), token.encode()):
                # The token leaves the address bar at once; the cookie carries it from now on.
                q = {k: v for k, v in request.query.items() if k != "token"}
                resp = web.HTTPFound(request.rel_url.with_query(q) if q else request.rel_url.path)
                resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict",
                                secure=request.headers.get("X-Forwarded-Proto") == "https")
                raise resp
            cookie = request.cookies.get(COOKIE, "")
            if not (cookie and hmac.compare_digest(cookie.encode(), token.encode())):
                return message_page(403, "This server needs its access token: open the address printed by "
                                         "'planner serve' (it ends with ?token=...).")
        resp = await handler(request)
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    async def index(request: web.Request) -> web.StreamResponse:
        return web.Response(text=worklist_page(worklist), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def api_worklist(request: web.Request) -> web.StreamResponse:
        return web.json_response([e.row() for e in worklist.entries()], headers={"Cache-Control": "no-store"})

    async def case_redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"/case/{request.match_info['key']}/")

    async def files(request: web.Request) -> web.StreamResponse:
        key, rel = request.match_info["key"], request.match_info["rel"]
        folder = worklist.folder(key)
        if folder is None:
            return message_page(404, "No such plan (the worklist is rebuilt when the server restarts).")
        if _bad_tail(rel) or not SERVED.match(rel):
            return message_page(404, "Not a file of this plan that can be shown.")
        path = (folder / rel).resolve()
        if not path.is_relative_to(folder) or not path.is_file():
            return message_page(404, "Not a file of this plan that can be shown.")
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    async def case(request: web.Request) -> web.StreamResponse:
        key, tail = request.match_info["key"], request.match_info["tail"]
        if _bad_tail(tail):
            return message_page(404, "Not found.")
        open_review = reviews.open.get(key)
        folder = open_review.folder if open_review is not None and open_review.alive else worklist.folder(key)
        if folder is None:
            return message_page(404, "No such plan (the worklist is rebuilt when the server restarts).")
        if request.method == "GET" and tail in ("", "index.html"):
            reviews.start(key, folder)  # the page loads meanwhile
            return web.Response(text=page_files.index, content_type="text/html", headers={"Cache-Control": "no-store"})
        static = page_files.path(tail) if request.method in ("GET", "HEAD") else None
        if static is not None:
            return web.FileResponse(static, headers={"Cache-Control": "no-cache"})
        try:
            port = await reviews.port_for(key, folder)
        except ReviewFailed as exc:
            return message_page(503, f"This plan's review could not start: {exc}")
        if tail == STATUS:
            return web.Response(status=204, headers={"Cache-Control": "no-store"})
        url = f"http://127.0.0.1:{port}/{tail}"
        if request.query_string:
            url += "?" + request.query_string
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _proxy_ws(request, url.replace("http://", "ws://", 1))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        session: ClientSession = request.app["client"]
        async with session.request(request.method, url, headers=headers, data=await request.read(),
                                   allow_redirects=False) as r:
            body = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP and k.lower() != "set-cookie"}
            return web.Response(status=r.status, body=body, headers=out)

    async def on_startup(app: web.Application) -> None:
        app["client"] = ClientSession(timeout=ClientTimeout(total=None, sock_connect=10))
        await reviews.start_spare()

    async def on_cleanup(app: web.Application) -> None:
        await app["client"].close()
        await reviews.close()

    app = web.Application(middlewares=[guard], client_max_size=4 * 2**20)
    app["reviews"] = reviews
    app["worklist"] = worklist
    app.router.add_get("/", index)
    app.router.add_get("/api/worklist", api_worklist)
    app.router.add_get(r"/case/{key:[0-9a-f]{20}}", case_redirect)
    app.router.add_get(r"/case/{key:[0-9a-f]{20}}/files/{rel:.+}", files)
    app.router.add_route("*", r"/case/{key:[0-9a-f]{20}}/{tail:.*}", case)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _proxy_ws(request: web.Request, url: str) -> web.StreamResponse:
    client: ClientSession = request.app["client"]
    ours = web.WebSocketResponse(max_msg_size=0, autoping=True)
    await ours.prepare(request)
    try:
        theirs = await client.ws_connect(url, max_msg_size=0, autoping=True)
    except Exception:
        await ours.close(message=b"review unavailable")
        return ours
    async def pump(src: Any, dst: Any) -> None:
        async for msg in src:
            if msg.type == WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break

    tasks = [asyncio.ensure_future(pump(ours, theirs)), asyncio.ensure_future(pump(theirs, ours))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await theirs.close()
        await ours.close()
    return ours


def serve(root: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8080, allow_replan: bool = False,
          token: str | None = None, announce: Callable[[str], None] = print, library: str | None = None,
          record_choices: bool = False) -> None:
    """Run the server until interrupted. ``token``: None draws one when ``host`` is not loopback."""
    if not Path(root).is_dir():
        raise InputError(f"{root}: not a folder")
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    app = make_app(root, token=token, allow_replan=allow_replan, library=library, record_choices=record_choices)

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)  # open pages do not hold a stop
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port  # type: ignore[union-attr]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
        announce(f"serving the plans under {Path(root).resolve()} at {url}")
        if token:
            announce("anyone with this address (token included) can read these plans: put a TLS reverse proxy "
                     "in front of it on a network")
        announce(("re-planning allowed (in memory)" if allow_replan else "read-only (re-planning needs --allow-replan)")
                 + ("; choices of trajectory recorded" if record_choices else "")
                 + (f"; similar cases from the library {library}" if library else "") + "; Ctrl+C stops")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())
