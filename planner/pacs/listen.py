"""``planner listen``: a storage SCP for the scanner console and the PACS.

- Accepts associations only from the configured nodes' AE titles (others are rejected at the
  association), called by this product's own AE title.
- Each received instance is written to disk, whole and flushed (``fsync``), before the C-STORE
  response says success: ``STORAGE/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``,
  exactly as encoded on the wire. What it cannot write it refuses (the sender keeps it).
- A series is complete after a quiet period without a new instance (``--quiet-s``); then, for a
  CT, it is prepared in the background (one at a time, while receiving goes on): loaded,
  segmented, the segmentation kept by voxel hash (:mod:`planner.anatomy.cache`), so that a plan
  on it starts without the segmentation wait.
- Everything received and prepared is logged, one JSON object a line, in ``STORAGE/listen.log``,
  and told on the terminal. SIGINT or SIGTERM stops it after the instance being written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from ..errors import InputError, brief
from .config import PacsConfig
from .dimse import _UID, storage_scp

DEFAULT_STORAGE = Path("~/planner-inbox")


class Inbox:
    """Received instances on disk, grouped by series, prepared when a series falls quiet."""

    def __init__(self, root: Path, quiet_s: float, prepare: bool, out: TextIO):
        self.root = root
        self.quiet_s = quiet_s
        self.prepare = prepare
        self.out = out
        self.lock = threading.Lock()
        self.pending: dict[tuple[str, str], dict[str, Any]] = {}  # (study, series) -> last time, count, who
        self.log_path = root / "listen.log"
        self.workers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        self.wake = threading.Event()

    def say(self, event: str, **fields: Any) -> None:
        record = {"time": dt.datetime.now().isoformat(timespec="seconds"), "event": event, **fields}
        with self.lock:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            text = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"{record['time']} {event} {text}", file=self.out, flush=True)

    def store(self, event: Any) -> int:
        """The C-STORE handler: the instance on disk (flushed) before success is answered."""
        try:
            ds = event.dataset
            study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            uid = str(event.request.AffectedSOPInstanceUID)
            raw = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # noqa: BLE001 - cannot understand: 0xC210, the sender keeps it
            self.say("refused", reason=brief(exc, 100))
            return 0xC210
        if not (_UID.match(study) and _UID.match(series) and _UID.match(uid)):
            self.say("refused", reason="a UID that is not digits and dots")
            return 0xC210
        folder = self.root / study / series
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{uid}.part"
            with open(tmp, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, folder / f"{uid}.dcm")
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # out of space, permissions: refused, the sender keeps the image
            self.say("refused", series=series, sop=uid, reason=brief(exc, 100))
            return 0xA700
        calling = str(getattr(event.assoc.requestor, "ae_title", "")).strip()
        with self.lock:
            p = self.pending.setdefault((study, series), {"count": 0, "from": calling,
                                                          "modality": str(ds.get("Modality", ""))})
            p["count"] += 1
            p["last"] = time.monotonic()
        self.wake.set()
        return 0x0000

    def due(self) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        """Series quiet for ``quiet_s``: taken out of the pending list."""
        now = time.monotonic()
        with self.lock:
            done = [(k, v) for k, v in self.pending.items() if now - v["last"] >= self.quiet_s]
            for k, _ in done:
                del self.pending[k]
        return done

    def next_due_in(self) -> float:
        with self.lock:
            if not self.pending:
                return 3600.0
            return max(0.0, min(v["last"] for v in self.pending.values()) + self.quiet_s - time.monotonic())

    def complete(self, key: tuple[str, str], info: dict[str, Any]) -> None:
        study, series = key
        folder = self.root / study / series
        n = sum(1 for p in folder.glob("*.dcm"))
        self.say("series-complete", series=series, instances=n, received_now=info["count"], sender=info["from"],
                 modality=info["modality"], folder=str(folder))
        if self.prepare and info["modality"].upper() == "CT":
            self.workers.submit(self._prepare, folder, series)

    def _prepare(self, folder: Path, series: str) -> None:
        from ..anatomy.autoseg import segment_ct
        from ..anatomy.cache import cached_segmentation, store_segmentation
        from ..images import load_image

        try:
            t = time.monotonic()
            ct = load_image(folder, series, "CT")
            if cached_segmentation(ct) is not None:
                self.say("prepared", series=series, voxel_sha256=ct.sha256[:16], note="already prepared")
                return
            sset = segment_ct(ct)
            entry = store_segmentation(ct, sset, source=f"series {series}")
            self.say("prepared", series=series, voxel_sha256=ct.sha256[:16], structures=len(sset),
                     seconds=round(time.monotonic() - t, 1), cache=str(entry))
        except Exception as exc:  # noqa: BLE001 - said, and the listener goes on
            self.say("prepare-failed", series=series, reason=brief(exc, 160))


def listen(cfg: PacsConfig, *, port: int | None = None, storage: str | os.PathLike[str] | None = None,
           prepare: bool = True, quiet_s: float = 10.0, out: TextIO, stop: threading.Event | None = None) -> int:
    """Receive until SIGINT/SIGTERM (or ``stop`` is set); returns the exit status."""
    allowed = cfg.calling_ae_titles()
    if not allowed:
        raise InputError(f"{cfg.source}: no node configured: planner listen accepts images only from the configured "
                         "nodes' AE titles")
    if not 0 < quiet_s <= 3600:
        raise InputError(f"--quiet-s {quiet_s}: a number of seconds, more than 0 and at most 3600")
    root = Path(os.path.expanduser(str(storage or cfg.storage or DEFAULT_STORAGE)))
    root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK):
        raise InputError(f"{root}: cannot write there")
    inbox = Inbox(root, quiet_s, prepare, out)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, frame: Any) -> None:
            stop.set()
            inbox.wake.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    with storage_scp(cfg, inbox.store, port, allowed):
        inbox.say("listening", ae_title=cfg.ae_title, port=port or cfg.listen_port,
                  accepting=",".join(sorted(allowed)), storage=str(root))
        while not stop.is_set():
            inbox.wake.wait(timeout=min(inbox.next_due_in(), 1.0))
            inbox.wake.clear()
            for key, info in inbox.due():
                inbox.complete(key, info)
    inbox.prepare = False  # stopping: what is pending is logged, not prepared
    for key, info in list(inbox.pending.items()):
        inbox.complete(key, info)
    inbox.say("stopping", note="finishing the preparation under way; queued ones are dropped")
    inbox.workers.shutdown(wait=True, cancel_futures=True)
    inbox.say("stopped")
    return 0
