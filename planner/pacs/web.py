"""DICOMweb with a PACS node (its ``dicomweb_url``), with dicomweb-client: QIDO-RS (find),
WADO-RS (pull, in the transfer syntax the node stores), STOW-RS (push). The same checks as the
DIMSE commands: a pull is verified complete against the node's list of the series' instances
and appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError, brief
from .config import DEFAULT_TIMEOUT_S, Node
from .dimse import PacsError, Progress, SeriesRow, check_uid, date_range


def _client(node: Node, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    from dicomweb_client.api import DICOMwebClient

    if not node.dicomweb_url:
        raise InputError(f"PACS node {node.name}: no dicomweb_url in the configuration (DICOMweb needs one)")
    return DICOMwebClient(node.dicomweb_url, timeout=timeout_s)


@contextlib.contextmanager
def _errors(node: Node, what: str) -> Iterator[None]:
    import requests

    try:
        yield
    except requests.exceptions.Timeout:
        raise PacsError(f"PACS node {node.name} ({node.dicomweb_url}): {what}: no answer within the time allowed") \
            from None
    except requests.exceptions.ConnectionError as exc:
        raise PacsError(f"PACS node {node.name} ({node.dicomweb_url}): {what}: cannot connect ({brief(exc, 100)})") \
            from None
    except requests.exceptions.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "?"
        raise PacsError(f"PACS node {node.name} ({node.dicomweb_url}): {what}: HTTP {code}") from None


def _value(item: dict[str, Any], tag: str) -> str:
    v = item.get(tag, {}).get("Value")
    if not v:
        return ""
    x = v[0]
    if isinstance(x, dict):  # a person name
        return str(x.get("Alphabetic", ""))
    return str(x)


def find(node: Node, *, patient_id: str | None = None, accession: str | None = None, study_date: str | None = None,
         modality: str | None = None, series_uid: str | None = None) -> list[SeriesRow]:
    """The series matching the filters (QIDO-RS: studies, then their series)."""
    client = _client(node)
    filters: dict[str, Any] = {}
    if patient_id:
        filters["PatientID"] = patient_id
    if accession:
        filters["AccessionNumber"] = accession
    if study_date:
        filters["StudyDate"] = date_range(study_date)
    rows = []
    with _errors(node, "QIDO-RS"):
        studies = client.search_for_studies(search_filters=filters, get_remaining=True)
        for st in studies:
            study_uid = _value(st, "0020000D")
            sf: dict[str, Any] = {}
            if modality:
                sf["Modality"] = modality
            if series_uid:
                sf["SeriesInstanceUID"] = series_uid
            for se in client.search_for_series(study_instance_uid=study_uid, search_filters=sf, get_remaining=True,
                                               fields=["SeriesDescription", "NumberOfSeriesRelatedInstances"]):
                n = _value(se, "00201209")
                rows.append(SeriesRow(_value(st, "00100020"), _value(st, "00100010"), _value(st, "00080020"),
                                      _value(st, "00080050"), study_uid, _value(st, "00081030"),
                                      _value(se, "0020000E"), _value(se, "00080060"), _value(se, "00200011"),
                                      _value(se, "0008103E"), int(n) if n.isdigit() else None))
    rows.sort(key=lambda r: (r.study_date, r.study_uid, r.series_number.zfill(6), r.series_uid))
    return rows


def pull(node: Node, series_uid: str, out: str | os.PathLike[str], *, progress: Progress | None = None) -> list[Path]:
    """Retrieve one series by WADO-RS into ``out`` (new or empty), verified complete."""
    series_uid = check_uid(series_uid)
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest}: --out must be a new or empty folder")
    rows = [r for r in find(node, series_uid=series_uid) if r.series_uid == series_uid]
    if not rows:
        raise PacsError(f"PACS node {node.name}: no series {series_uid}")
    client = _client(node)
    with _errors(node, "QIDO-RS"):
        listed = client.search_for_instances(study_instance_uid=rows[0].study_uid, series_instance_uid=series_uid,
                                             get_remaining=True)
    expected = {_value(i, "00080018") for i in listed} - {""}
    if not expected:
        raise PacsError(f"PACS node {node.name}: series {series_uid} lists no instance")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.pull-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    got: set[str] = set()
    try:
        with _errors(node, "WADO-RS"):
            for ds in client.iter_series(rows[0].study_uid, series_uid, media_types=(("application/dicom", "*"),)):
                uid = str(ds.SOPInstanceUID)
                if uid not in expected:
                    raise PacsError(f"PACS node {node.name}: sent instance {uid}, not in series {series_uid}; "
                                    "nothing was kept")
                ds.save_as(staging / f"{check_uid(uid, 'SOP instance UID')}.dcm", enforce_file_format=True)
                got.add(uid)
                if progress is not None:
                    progress(len(got), len(expected), "pulling")
        if got != expected:
            raise PacsError(f"PACS node {node.name}: series {series_uid} incomplete: {len(got)} of {len(expected)} "
                            "instances received; nothing was kept")
        if dest.exists():
            dest.rmdir()
        os.rename(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(dest.iterdir())


def push(node: Node, files: list[Path], progress: Progress | None = None) -> int:
    """STOW-RS of the files (in batches of one study); the number stored."""
    import pydicom

    client = _client(node)
    by_study: dict[str, list[Any]] = {}
    for f in files:
        ds = pydicom.dcmread(f)
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    done = 0
    for study, datasets in by_study.items():
        with _errors(node, "STOW-RS"):
            answer = client.store_instances(datasets, study_instance_uid=study)
        failed = answer.get("FailedSOPSequence", []) if answer is not None else []
        if failed:
            raise PacsError(f"PACS node {node.name}: STOW-RS refused {len(failed)} of {len(datasets)} objects")
        done += len(datasets)
        if progress is not None:
            progress(done, len(files), "sending")
    return done
