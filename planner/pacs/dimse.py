"""DICOM networking (DIMSE) with a PACS node, with pynetdicom: echo, find, pull, push.

- **find**: C-FIND in the Study Root model: the studies that match, then their series.
- **pull**: the series' instances are listed first (C-FIND at IMAGE level: their SOP Instance
  UIDs), then retrieved by C-GET (the node sends them back on the same association) or by
  C-MOVE (the node sends them to this product's own storage SCP, on ``listen_port``). Each
  instance is written as it arrives, exactly as it was encoded on the wire (no decoding and
  re-encoding), into a staging folder; the folder becomes ``--out`` only when every listed
  instance has arrived. A series missing images, or with any that failed, is refused and nothing
  is left behind.
- **push**: C-STORE of every DICOM file of a folder, each in the transfer syntax it is stored in.

Every call gives up after the configuration's ``timeout_s`` (10 s by default) without an answer:
an unreachable node, a refused connection, a rejected or aborted association, each is one
:class:`PacsError` (exit status 2) naming the node and what happened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import InputError, brief
from .config import Node, PacsConfig

Progress = Callable[[int, int, str], None]


class PacsError(InputError):
    """A PACS node could not be reached or refused what was asked (exit status 2)."""


#: The storage classes this product receives (pull, listen): images a plan is made on and the
#: objects a plan writes. pynetdicom allows at most 128 presentation contexts per association.
STORAGE_CLASSES = (
    "CTImageStorage", "EnhancedCTImageStorage", "LegacyConvertedEnhancedCTImageStorage",
    "MRImageStorage", "EnhancedMRImageStorage", "LegacyConvertedEnhancedMRImageStorage",
    "PositronEmissionTomographyImageStorage", "EnhancedPETImageStorage",
    "SecondaryCaptureImageStorage", "MultiFrameTrueColorSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage", "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "EncapsulatedPDFStorage", "SegmentationStorage", "RTStructureSetStorage", "Comprehensive3DSRStorage",
    "ComprehensiveSRStorage", "EnhancedSRStorage", "UltrasoundImageStorage", "UltrasoundMultiFrameImageStorage",
)


def transfer_syntaxes() -> list[str]:
    """Every transfer syntax pydicom knows, uncompressed first: an instance is taken in the
    syntax the node holds it in (no transcoding on the way)."""
    from pydicom import uid

    first = [uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
             uid.ExplicitVRBigEndian]
    rest = [u for u in uid.AllTransferSyntaxes if u not in first]
    return [str(u) for u in first + rest]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pynetdicom logs each failure at ERROR; the failure reaches the user once, as PacsError."""
    log = logging.getLogger("pynetdicom")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _ae(cfg: PacsConfig) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=cfg.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.timeout_s
    ae.connection_timeout = cfg.timeout_s
    ae.maximum_pdu_size = 0  # no limit on what we receive
    return ae


def _tls(node: Node) -> Any:
    if not node.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(node.tls_ca) if node.tls_ca else None)
    if node.tls_cert is not None:
        ctx.load_cert_chain(str(node.tls_cert), str(node.tls_key))
    return (ctx, node.host)


def _reach(cfg: PacsConfig, node: Node) -> None:
    """A TCP connection first: 'cannot reach' is told apart from 'refused the association'."""
    try:
        with socket.create_connection((node.host, node.port), timeout=cfg.timeout_s):
            pass
    except socket.timeout:
        raise PacsError(f"PACS node {node.describe()}: no answer within {cfg.timeout_s:g} s (unreachable)") from None
    except OSError as exc:
        raise PacsError(f"PACS node {node.describe()}: cannot connect: {brief(exc.strerror or exc)}") from None


@contextlib.contextmanager
def association(cfg: PacsConfig, node: Node, contexts: list[tuple[str, list[str]]], roles: list[Any] | None = None,
                handlers: list[Any] | None = None) -> Iterator[Any]:
    """An established association with ``node`` offering ``contexts`` (abstract syntax,
    transfer syntaxes); released on exit (aborted on an error)."""
    _reach(cfg, node)
    ae = _ae(cfg)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    import time

    started = time.monotonic()
    with _quiet():
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, ext_neg=roles or [],
                             evt_handlers=handlers or [], tls_args=_tls(node))
    if not assoc.is_established:
        silent = time.monotonic() - started >= 0.9 * cfg.timeout_s  # pynetdicom aborts on its ACSE timeout
        if assoc.is_rejected:
            why = "rejected the association (is this product's AE title " \
                  f"{cfg.ae_title!r} known to it, and is its AE title {node.ae_title!r}?)"
        elif assoc.is_aborted and not silent:
            why = "aborted the association"
        else:
            why = f"did not answer the association request within {cfg.timeout_s:g} s"
        raise PacsError(f"PACS node {node.describe()} {why}")
    try:
        yield assoc
    except BaseException:
        with _quiet():
            assoc.abort()
        raise
    else:
        with _quiet():
            assoc.release()


def _status_text(status: Any) -> str:
    code = int(getattr(status, "Status", -1)) if status is not None else -1
    comment = getattr(status, "ErrorComment", "") if status is not None else ""
    return f"status 0x{code:04X}" + (f" ({brief(comment, 80)})" if comment else "") if code >= 0 else \
        "no answer (timeout or connection lost)"


def echo(cfg: PacsConfig, node: Node) -> None:
    """C-ECHO: the node answers (PacsError otherwise)."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom.sop_class import Verification

    with association(cfg, node, [(Verification, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])]) as assoc:
        with _quiet():
            status = assoc.send_c_echo()
        if status is None or int(status.Status) != 0:
            raise PacsError(f"PACS node {node.describe()}: C-ECHO failed: {_status_text(status)}")


# --- find --------------------------------------------------------------------------------------

_DATE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")


def date_range(text: str | None) -> str:
    """A DICOM date or date range (``20070208``, ``20070101-20071231``, ``-20071231``,
    ``20070101-``), checked; the empty string for no constraint."""
    if not text:
        return ""
    m = _DATE.match(text.strip())
    if not m or not (m.group(1) or m.group(3)) or (m.group(2) is None and m.group(3)):
        raise InputError(f"--study-date {brief(repr(text), 40)}: expected YYYYMMDD or a range YYYYMMDD-YYYYMMDD "
                         "(either end may be left open)")
    import datetime as dt

    for d in (m.group(1), m.group(3)):
        if d:
            try:
                dt.date(int(d[:4]), int(d[4:6]), int(d[6:]))
            except ValueError:
                raise InputError(f"--study-date: {d} is not a date") from None
    return text.strip()


@dataclass
class SeriesRow:
    """One series found on a node (study and series attributes as the node gave them)."""

    patient_id: str
    patient_name: str
    study_date: str
    accession: str
    study_uid: str
    study_description: str
    series_uid: str
    modality: str
    series_number: str
    series_description: str
    instances: int | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _find(assoc: Any, query: Any, model: str, node: Node) -> list[Any]:
    out = []
    with _quiet():
        responses = list(assoc.send_c_find(query, model))
    for status, identifier in responses:
        if status is None:
            raise PacsError(f"PACS node {node.describe()}: C-FIND got no answer (timeout or connection lost)")
        code = int(status.Status)
        if code in (0xFF00, 0xFF01):
            if identifier is not None:
                out.append(identifier)
        elif code != 0:
            raise PacsError(f"PACS node {node.describe()}: C-FIND failed: {_status_text(status)}")
    return out


def _text(ds: Any, keyword: str) -> str:
    v = ds.get(keyword, "")
    return "" if v is None else str(v)


def find(cfg: PacsConfig, node: Node, *, patient_id: str | None = None, accession: str | None = None,
         study_date: str | None = None, modality: str | None = None, study_uid: str | None = None,
         series_uid: str | None = None) -> list[SeriesRow]:
    """The series on ``node`` matching the filters (C-FIND, Study Root: studies, then series)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = patient_id or ""
    q.PatientName = ""
    q.StudyDate = date_range(study_date)
    q.AccessionNumber = accession or ""
    q.StudyInstanceUID = study_uid or ""
    q.StudyDescription = ""
    rows: list[SeriesRow] = []
    with association(cfg, node, [(FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
        studies = _find(assoc, q, FIND, node)
        for st in studies:
            s = Dataset()
            s.QueryRetrieveLevel = "SERIES"
            s.StudyInstanceUID = _text(st, "StudyInstanceUID")
            s.SeriesInstanceUID = series_uid or ""
            s.Modality = modality or ""
            s.SeriesNumber = ""
            s.SeriesDescription = ""
            s.NumberOfSeriesRelatedInstances = ""
            for se in _find(assoc, s, FIND, node):
                n = se.get("NumberOfSeriesRelatedInstances", None)
                try:
                    count = int(n) if n not in (None, "") else None
                except (TypeError, ValueError):
                    count = None
                rows.append(SeriesRow(_text(st, "PatientID"), _text(st, "PatientName"), _text(st, "StudyDate"),
                                      _text(st, "AccessionNumber"), _text(st, "StudyInstanceUID"),
                                      _text(st, "StudyDescription"), _text(se, "SeriesInstanceUID"),
                                      _text(se, "Modality"), _text(se, "SeriesNumber"),
                                      _text(se, "SeriesDescription"), count))
    rows.sort(key=lambda r: (r.study_date, r.study_uid, r.series_number.zfill(6), r.series_uid), reverse=False)
    return rows


def list_instances(cfg: PacsConfig, node: Node, study_uid: str, series_uid: str) -> list[str]:
    """The SOP Instance UIDs of a series (C-FIND at IMAGE level)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID = study_uid
    q.SeriesInstanceUID = series_uid
    q.SOPInstanceUID = ""
    with association(cfg, node, [(FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
        found = _find(assoc, q, FIND, node)
    return sorted({_text(d, "SOPInstanceUID") for d in found if _text(d, "SOPInstanceUID")})


# --- pull --------------------------------------------------------------------------------------

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def check_uid(uid: str, what: str = "series UID") -> str:
    if not isinstance(uid, str) or not _UID.match(uid.strip()) or len(uid.strip()) > 64:
        raise InputError(f"{what} {brief(repr(uid), 70)}: a DICOM UID is digits and dots, at most 64 characters")
    return uid.strip()


class _Receiver:
    """Writes each received instance, as encoded on the wire, into ``folder``; counts them."""

    def __init__(self, folder: Path, expected: set[str], progress: Progress | None):
        self.folder = folder
        self.expected = expected
        self.received: set[str] = set()
        self.unexpected: list[str] = []
        self.progress = progress
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> int:
        try:
            raw = event.encoded_dataset(include_meta=True)
            uid = str(event.request.AffectedSOPInstanceUID)
        except Exception:  # noqa: BLE001 - tell the sender: cannot understand (0xC210)
            return 0xC210
        if not _UID.match(uid):
            return 0xC210
        path = self.folder / f"{uid}.dcm"
        tmp = self.folder / f".{uid}.part"
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        with self.lock:
            if uid in self.expected:
                self.received.add(uid)
            else:
                self.unexpected.append(uid)
            if self.progress is not None:
                self.progress(len(self.received), len(self.expected), "pulling")
        return 0x0000


#: The image classes plans are made on: one presentation context per common transfer syntax, so
#: that the sender finds the syntax each instance is stored in and sends it as it is.
_IMAGE_CLASSES = STORAGE_CLASSES[:8]


def _common_syntaxes() -> list[str]:
    from pydicom import uid

    return [str(u) for u in (uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.JPEGLosslessSV1,
                             uid.JPEGLossless, uid.JPEG2000Lossless, uid.JPEG2000, uid.JPEGLSLossless,
                             uid.RLELossless, uid.JPEGBaseline8Bit, uid.DeflatedExplicitVRLittleEndian)]


def _storage_contexts(split: bool = True) -> list[tuple[str, list[str]]]:
    """Storage presentation contexts: with ``split`` (as requestor), the image classes once per
    common transfer syntax (at most 128 contexts in all); else each class with every syntax."""
    from pynetdicom import sop_class

    ts = transfer_syntaxes()
    out: list[tuple[str, list[str]]] = []
    for name in STORAGE_CLASSES:
        abstract = getattr(sop_class, name)
        if split and name in _IMAGE_CLASSES:
            out += [(abstract, [t]) for t in _common_syntaxes()]
        else:
            out.append((abstract, ts))
    return out


def pull(cfg: PacsConfig, node: Node, series_uid: str, out: str | os.PathLike[str], *, via: str = "get",
         progress: Progress | None = None) -> list[Path]:
    """Retrieve one series into the folder ``out`` (new, or empty), verified complete: every
    instance the node lists for the series, nothing else. ``via``: ``get`` (C-GET) or ``move``
    (C-MOVE to this product's AE title, received on ``listen_port``). Returns the files."""
    series_uid = check_uid(series_uid)
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest}: --out must be a new or empty folder")
    rows = find(cfg, node, series_uid=series_uid)
    rows = [r for r in rows if r.series_uid == series_uid]
    if not rows:
        raise PacsError(f"PACS node {node.describe()}: no series {series_uid}")
    row = rows[0]
    expected = set(list_instances(cfg, node, row.study_uid, series_uid))
    if not expected:
        raise PacsError(f"PACS node {node.describe()}: series {series_uid} lists no instance")
    if row.instances is not None and row.instances != len(expected):
        raise PacsError(f"PACS node {node.describe()}: series {series_uid} says {row.instances} instances but lists "
                        f"{len(expected)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.pull-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        receiver = _Receiver(staging, expected, progress)
        if via == "get":
            _get(cfg, node, row.study_uid, series_uid, receiver)
        elif via == "move":
            _move(cfg, node, row.study_uid, series_uid, receiver)
        else:
            raise InputError(f"--via {via!r}: get or move")
        missing = expected - receiver.received
        if missing:
            raise PacsError(f"PACS node {node.describe()}: series {series_uid} incomplete: {len(receiver.received)} of "
                            f"{len(expected)} instances received; nothing was kept")
        if receiver.unexpected:
            raise PacsError(f"PACS node {node.describe()}: sent {len(receiver.unexpected)} instance(s) not in series "
                            f"{series_uid}; nothing was kept")
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        os.rename(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(dest.iterdir())


def _retrieve_query(study_uid: str, series_uid: str) -> Any:
    from pydicom.dataset import Dataset

    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = study_uid
    q.SeriesInstanceUID = series_uid
    return q


def _final(responses: list[tuple[Any, Any]], node: Node, what: str) -> None:
    """The last status of a C-GET / C-MOVE: success, or a clear failure."""
    if not responses:
        raise PacsError(f"PACS node {node.describe()}: {what} got no answer")
    status = responses[-1][0]
    if status is None:
        raise PacsError(f"PACS node {node.describe()}: {what} got no answer (timeout or connection lost)")
    code = int(status.Status)
    failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
    if code not in (0x0000, 0xB000) or failed:
        raise PacsError(f"PACS node {node.describe()}: {what} failed: {_status_text(status)}"
                        + (f", {failed} instance(s) failed" if failed else ""))


def _get(cfg: PacsConfig, node: Node, study_uid: str, series_uid: str, receiver: _Receiver) -> None:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    storage = _storage_contexts()
    roles = [build_role(abstract, scp_role=True) for abstract in dict.fromkeys(a for a, _ in storage)]
    contexts = [(GET, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]), *storage]
    with association(cfg, node, contexts, roles, [(evt.EVT_C_STORE, receiver)]) as assoc:
        with _quiet():
            responses = list(assoc.send_c_get(_retrieve_query(study_uid, series_uid), GET))
    _final(responses, node, "C-GET")


@contextlib.contextmanager
def storage_scp(cfg: PacsConfig, handler: Callable[[Any], int], port: int | None = None,
                allowed: set[str] | None = None) -> Iterator[Any]:
    """This product's storage SCP on ``port`` (the configuration's ``listen_port``), calling
    ``handler`` for each C-STORE; associations only from ``allowed`` calling AE titles (all when None)."""
    from pynetdicom import evt

    ae = _ae(cfg)
    ae.require_called_aet = True
    if allowed is not None:
        ae.require_calling_aet = sorted(allowed)
    for abstract, syntaxes in _storage_contexts(split=False):
        ae.add_supported_context(abstract, syntaxes)
    from pynetdicom.sop_class import Verification

    ae.add_supported_context(Verification)
    try:
        with _quiet():
            server = ae.start_server(("", port or cfg.listen_port), block=False,
                                     evt_handlers=[(evt.EVT_C_STORE, handler)])
    except OSError as exc:
        raise PacsError(f"cannot listen on port {port or cfg.listen_port}: {brief(exc.strerror or exc)}") from None
    try:
        yield server
    finally:
        server.shutdown()


def _move(cfg: PacsConfig, node: Node, study_uid: str, series_uid: str, receiver: _Receiver) -> None:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    with storage_scp(cfg, receiver, allowed={node.ae_title}):
        with association(cfg, node, [(MOVE, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
            with _quiet():
                responses = list(assoc.send_c_move(_retrieve_query(study_uid, series_uid), cfg.ae_title, MOVE))
    _final(responses, node, "C-MOVE")


# --- push --------------------------------------------------------------------------------------

def dicom_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The DICOM Part 10 files under ``folder`` (recursively; 'DICM' at byte 128)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            with open(p, "rb") as fh:
                head = fh.read(132)
            if len(head) == 132 and head[128:] == b"DICM":
                out.append(p)
    return out


def push(cfg: PacsConfig, node: Node, files: list[Path], progress: Progress | None = None) -> int:
    """C-STORE each file, in its own transfer syntax; returns how many were stored (PacsError
    naming the first refused file otherwise)."""
    import pydicom

    if not files:
        raise InputError("no DICOM file to send")
    heads = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            heads.append((f, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{f}: not a readable DICOM file ({brief(exc)})") from None
    contexts: dict[tuple[str, str], None] = {(c, t): None for _, c, t in heads}
    if len(contexts) > 128:
        raise InputError(f"{len(contexts)} kinds of object (SOP class and transfer syntax): more than one association "
                         "can carry (128)")
    done = 0
    with association(cfg, node, [(c, [t]) for c, t in contexts]) as assoc:
        for n, (f, _, _) in enumerate(heads):
            ds = pydicom.dcmread(f)
            with _quiet():
                status = assoc.send_c_store(ds)
            code = int(status.Status) if status is not None else -1
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise PacsError(f"PACS node {node.describe()}: refused {f.name}: {_status_text(status)} "
                                f"({done} of {len(heads)} stored before it)")
            done += 1
            if progress is not None:
                progress(done, len(heads), "sending")
    return done
