"""PACS in and out against a real Orthanc started by the tests (planner.testing.orthanc).

The scans go into Orthanc through its own REST API (an independent way in) and what this
product sends is read back the same way and by DICOMweb. What a user relies on: a pulled series
is the series, complete, element for element; a plan's objects land in the CT's study and
nowhere else; a node that does not answer, refuses, or sends part of a series gives one clear
line and exit 2 with nothing half-written; the listener keeps every image it acknowledged and
only from the nodes it knows.
"""

from __future__ import annotations

import copy
import io
import json
import queue
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import CHEST_CT, ROOT, require_tool

from planner.cli.main import main
from planner.testing.orthanc import free_port, start_orthanc, temporary_config

DEMO_CT = ROOT / "assets" / "demo" / "thorax" / "ct"
DEMO_STRUCTURES = ROOT / "assets" / "demo" / "thorax" / "structures.nii.gz"


@pytest.fixture(scope="module")
def orthanc():
    require_tool("Orthanc", "orthanc")
    listen_port = free_port()
    server = start_orthanc(modalities={"planner": ("PLANNER", "127.0.0.1", listen_port)})
    server.listen_port = listen_port
    yield server
    server.stop()


@pytest.fixture(scope="module")
def demo_stored(orthanc):
    files = sorted(DEMO_CT.iterdir())
    orthanc.store_files(files)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return files, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


@pytest.fixture()
def config(orthanc, tmp_path):
    return temporary_config(tmp_path, orthanc, listen_port=orthanc.listen_port)


def _one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def _same_elements(x, y, where="") -> None:
    """Every element's tag and value bytes, as stored (not decoded: private tags of unknown VR
    stay bytes); sequences item by item (their length encoding may differ: a sender re-encodes)."""
    assert list(x.keys()) == list(y.keys()), where
    for tag in x.keys():
        rx, ry = x.get_item(tag), y.get_item(tag)
        raw_x = getattr(rx, "value", None)
        is_seq = getattr(rx, "VR", None) == "SQ" or getattr(rx, "length", 0) == 0xFFFFFFFF or (
            isinstance(raw_x, bytes) and raw_x[:4] == b"\xfe\xff\x00\xe0")
        if tag == 0x7FE00010:  # pixel data (encapsulated: undefined length too): last, below
            continue
        if is_seq:
            sx, sy = x[tag].value, y[tag].value
            assert len(sx) == len(sy), f"{where}{tag}"
            for n, (ix, iy) in enumerate(zip(sx, sy)):
                _same_elements(ix, iy, f"{where}{tag}[{n}].")
        elif getattr(rx, "is_raw", False) and getattr(ry, "is_raw", False):
            assert rx.value == ry.value, f"{where}{tag}"
        else:  # one side already decoded by the reader (e.g. an ambiguous VR resolved): decoded values
            assert x[tag].value == y[tag].value, f"{where}{tag}"
    if 0x7FE00010 in x:  # read last: reading it decodes other elements of the dataset
        assert x.PixelData == y.PixelData, f"{where}pixel data"


def _same_instance(a: Path, b: Path) -> None:
    """Element for element (tags, values as stored, nested sequences) and the pixel data's bytes."""
    x, y = pydicom.dcmread(a), pydicom.dcmread(b)
    assert x.file_meta.TransferSyntaxUID == y.file_meta.TransferSyntaxUID
    _same_elements(x, y)


# --- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, says", [
    ("ae_title = 'P'\n[nodes.a]\nhost = 'h'\nport = 104\n", "ae_title is missing"),
    ("[nodes.a]\nae_title = 'A'\nhost = 'h'\nport = 70000\n", "port must be a whole number 1-65535"),
    ("[nodes.a]\nae_title = 'THIS_IS_FAR_TOO_LONG'\nhost = 'h'\nport = 104\n", "1-16 printable ASCII"),
    ("colour = 'red'\n", "unknown key(s) colour"),
    ("[nodes.a\n", "not valid TOML"),
    ("[nodes.a]\nae_title = 'A'\nhost = 'h'\nport = 104\ndicomweb_url = 'ftp://x'\n", "dicomweb_url must start"),
    ("[nodes.a]\nae_title = 'A'\nhost = 'h'\nport = 104\ntls_cert = 'nope.pem'\n", "is not a readable file"),
])
def test_bad_configurations_are_named(tmp_path, capsys, text, says):
    cfg = tmp_path / "pacs.toml"
    cfg.write_text(text)
    assert main(["pacs", "echo", "a", "--pacs-config", str(cfg)]) == 2
    err = _one_error(capsys)
    assert says in err and str(cfg) in err


def test_an_unknown_node_is_named_with_the_known_ones(orthanc, config, capsys):
    assert main(["pacs", "echo", "elsewhere", "--pacs-config", str(config)]) == 2
    assert "no node named 'elsewhere' (nodes: pacs)" in _one_error(capsys)


# --- find and pull ------------------------------------------------------------------------------

def test_echo_and_find(orthanc, demo_stored, config, capsys):
    files, study, series = demo_stored
    assert main(["pacs", "echo", "pacs", "--pacs-config", str(config)]) == 0
    assert "answers (C-ECHO)" in capsys.readouterr().out
    assert main(["pacs", "find", "pacs", "--modality", "CT", "--json", "--pacs-config", str(config)]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["series_uid"] == series)
    assert row["instances"] == len(files) and row["study_uid"] == study and row["modality"] == "CT"
    # the same by QIDO-RS
    assert main(["pacs", "find", "pacs", "--modality", "CT", "--web", "--json", "--pacs-config", str(config)]) == 0
    web = json.loads(capsys.readouterr().out)
    assert {r["series_uid"] for r in web} == {r["series_uid"] for r in rows}
    # filters: a patient ID that is not there, a date range that excludes the study
    assert main(["pacs", "find", "pacs", "--patient-id", "NOBODY", "--pacs-config", str(config)]) == 0
    assert "no series matches" in capsys.readouterr().out
    assert main(["pacs", "find", "pacs", "--study-date", "2030-", "--pacs-config", str(config)]) == 2
    assert "YYYYMMDD" in _one_error(capsys)


@pytest.mark.parametrize("via", ["get", "move", "web"])
def test_pull_gives_the_series_complete_and_unchanged(orthanc, demo_stored, config, tmp_path, capsys, via):
    files, study, series = demo_stored
    out = tmp_path / "pulled"
    assert main(["pacs", "pull", "pacs", "--series", series, "--out", str(out), "--via", via,
                 "--pacs-config", str(config)]) == 0
    assert f"pulled {len(files)} instances" in capsys.readouterr().out
    pulled = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in out.iterdir()}
    original = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in files}
    assert pulled.keys() == original.keys()
    for uid, p in original.items():
        _same_instance(p, pulled[uid])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.shared_data
def test_the_real_chest_ct_round_trips(orthanc, config, tmp_path):
    files = sorted(CHEST_CT.iterdir())
    orthanc.store_files(files)
    series = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    out = tmp_path / "chest"
    assert main(["pacs", "pull", "pacs", "--series", series, "--out", str(out), "--pacs-config", str(config)]) == 0
    original = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in files}
    assert len(list(out.iterdir())) == len(original) == 141
    for p in out.iterdir():
        _same_instance(original[p.stem], p)


def test_pull_refuses_a_nonempty_out_and_a_bad_uid(orthanc, demo_stored, config, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    series = demo_stored[2]
    assert main(["pacs", "pull", "pacs", "--series", series, "--out", str(tmp_path / "full"),
                 "--pacs-config", str(config)]) == 2
    assert "new or empty folder" in _one_error(capsys)
    assert (tmp_path / "full" / "x").read_text() == "mine"
    assert main(["pacs", "pull", "pacs", "--series", "1.2.3;rm", "--out", str(tmp_path / "o"),
                 "--pacs-config", str(config)]) == 2
    assert "digits and dots" in _one_error(capsys)
    assert main(["pacs", "pull", "pacs", "--series", "1.2.3.4", "--out", str(tmp_path / "o"),
                 "--pacs-config", str(config)]) == 2
    assert "no series 1.2.3.4" in _one_error(capsys)
    assert not (tmp_path / "o").exists()


# --- nodes that do not answer, refuse, or send part of a series -----------------------------------

def test_a_closed_port_is_said_at_once(tmp_path, capsys):
    cfg = tmp_path / "pacs.toml"
    cfg.write_text(f"timeout_s = 2\n[nodes.gone]\nae_title = 'GONE'\nhost = '127.0.0.1'\nport = {free_port()}\n")
    assert main(["pacs", "find", "gone", "--pacs-config", str(cfg)]) == 2
    assert "cannot connect" in _one_error(capsys)


def test_a_node_that_never_answers_is_given_up(tmp_path, capsys):
    # a TCP server that accepts and then says nothing: the association request times out
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        cfg = tmp_path / "pacs.toml"
        cfg.write_text(f"timeout_s = 1\n[nodes.mute]\nae_title = 'MUTE'\nhost = '127.0.0.1'\n"
                       f"port = {srv.getsockname()[1]}\n")
        assert main(["pacs", "echo", "mute", "--pacs-config", str(cfg)]) == 2
        assert "did not answer the association request within 1 s" in _one_error(capsys)
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


def test_a_rejected_association_is_said(orthanc, tmp_path, capsys):
    cfg = tmp_path / "pacs.toml"  # the node's AE title is wrong: Orthanc checks the called AE title
    cfg.write_text(f"[nodes.pacs]\nae_title = 'NOT_ORTHANC'\nhost = '127.0.0.1'\nport = {orthanc.dicom_port}\n")
    assert main(["pacs", "echo", "pacs", "--pacs-config", str(cfg)]) == 2
    assert "rejected the association" in _one_error(capsys)


def test_a_series_missing_images_is_refused_and_nothing_is_kept(demo_stored, tmp_path, capsys):
    # a misbehaving PACS (a real DICOM server, pynetdicom): it lists every instance of the series
    # but its C-GET sends all but one
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import (CTImageStorage, StudyRootQueryRetrieveInformationModelFind,
                                      StudyRootQueryRetrieveInformationModelGet)

    files, study, series = demo_stored
    datasets = [pydicom.dcmread(f) for f in files[:5]]

    def on_find(event):
        level = event.identifier.QueryRetrieveLevel
        rows = [datasets[0]] if level in ("STUDY", "SERIES") else datasets
        for d in rows:
            r = pydicom.Dataset()
            r.QueryRetrieveLevel = level
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality", "PatientID"):
                setattr(r, kw, d.get(kw, ""))
            if level == "SERIES":
                r.NumberOfSeriesRelatedInstances = len(datasets)
            yield 0xFF00, r

    def on_get(event):
        yield len(datasets) - 1
        for d in datasets[:-1]:
            yield 0xFF00, d

    ae = AE(ae_title="BROKEN")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(CTImageStorage, [str(datasets[0].file_meta.TransferSyntaxUID)], scu_role=True,
                             scp_role=True)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get)])
    try:
        cfg = tmp_path / "pacs.toml"
        cfg.write_text(f"[nodes.broken]\nae_title = 'BROKEN'\nhost = '127.0.0.1'\nport = {port}\n")
        assert main(["pacs", "pull", "broken", "--series", series, "--out", str(tmp_path / "o"),
                     "--pacs-config", str(cfg)]) == 2
        assert "incomplete: 4 of 5 instances received; nothing was kept" in _one_error(capsys)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pacs.toml"]
    finally:
        server.shutdown()


# --- plan from the PACS, push the plan back ------------------------------------------------------

@pytest.fixture(scope="module")
def planned_from_pacs(orthanc, demo_stored, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pacsplan")
    cfg = temporary_config(tmp, orthanc, listen_port=orthanc.listen_port)
    series = demo_stored[2]
    args = ["plan", "--pacs", "pacs", "--series", series, "--pacs-config", str(cfg), "--procedure", "lung-biopsy",
            "--structures", str(DEMO_STRUCTURES), "--target-label", "lung_nodule", "--n", "1", "--dicom"]
    assert main([*args, "--out", str(tmp / "plan")]) == 0
    return tmp, cfg, args


def test_plan_with_pacs_pulls_once_then_uses_the_cache(planned_from_pacs, capsys):
    tmp, cfg, args = planned_from_pacs
    doc = json.loads((tmp / "plan" / "plan.json").read_text())
    assert doc["status"] == "ok" and doc["image"]["series_instance_uid"]
    assert main([*args, "--out", str(tmp / "again")]) == 0
    assert "cached: series" in capsys.readouterr().err
    again = json.loads((tmp / "again" / "plan.json").read_text())
    assert again["image"]["sha256"] == doc["image"]["sha256"]


def test_push_files_the_plan_in_the_cts_study(orthanc, demo_stored, planned_from_pacs, capsys):
    tmp, cfg, _ = planned_from_pacs
    files, study, series = demo_stored
    before = set(orthanc.instances())
    assert main(["pacs", "push", "pacs", str(tmp / "plan"), "--pacs-config", str(cfg)]) == 0
    sent = sorted((tmp / "plan" / "dicom").iterdir())
    assert f"sent {len(sent)} DICOM objects" in capsys.readouterr().out
    new = set(orthanc.instances()) - before
    assert len(new) == len(sent)
    for oid in new:  # read back through the PACS: in the CT's study, same bytes of content
        tags = orthanc.instance_tags(oid)
        assert tags["StudyInstanceUID"] == study
        mine = next(p for p in sent if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                    == tags["SOPInstanceUID"])
        back = pydicom.dcmread(io.BytesIO(orthanc.instance_file(oid)))
        assert back == pydicom.dcmread(mine)
    # and by DICOMweb: the study now lists the plan's series beside the CT
    from planner.pacs.config import load_config
    from planner.pacs.web import find as web_find

    node = load_config(cfg).node("pacs")
    series_found = {r.series_uid for r in web_find(node) if r.study_uid == study}
    assert series in series_found and len(series_found) >= 2


def test_push_refuses_a_study_held_for_another_patient(orthanc, demo_stored, planned_from_pacs, tmp_path, capsys):
    tmp, cfg, _ = planned_from_pacs
    # a plan object of the same study UID, but the node's study under another patient
    src = sorted((tmp / "plan" / "dicom").iterdir())[0]
    ds = pydicom.dcmread(src)
    other = copy.deepcopy(ds)
    other.PatientID = "SOMEONE-ELSE"
    other.StudyInstanceUID = pydicom.uid.generate_uid()
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    p = tmp_path / "other.dcm"
    other.save_as(p, enforce_file_format=True)
    orthanc.store_files([p])
    fake = tmp_path / "plan"
    (fake / "dicom").mkdir(parents=True)
    (fake / "plan.json").write_text("{}")
    mine = copy.deepcopy(ds)
    mine.StudyInstanceUID = other.StudyInstanceUID
    mine.SOPInstanceUID = pydicom.uid.generate_uid()
    mine.save_as(fake / "dicom" / "report.dcm", enforce_file_format=True)
    before = set(orthanc.instances())
    assert main(["pacs", "push", "pacs", str(fake), "--pacs-config", str(cfg)]) == 2
    err = _one_error(capsys)
    assert "belongs to patient 'SOMEONE-ELSE'" in err and "nothing sent" in err
    assert set(orthanc.instances()) == before


def test_push_without_dicom_objects_says_how_to_make_them(tmp_path, config, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "plan.json").write_text("{}")
    assert main(["pacs", "push", "pacs", str(tmp_path / "p"), "--pacs-config", str(config)]) == 2
    assert "plan with --dicom" in _one_error(capsys)


# --- the listener ----------------------------------------------------------------------------------

class _Listener:
    def __init__(self, config: Path, storage: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "planner.cli.main", "listen", "--pacs-config", str(config), "--storage",
             str(storage), "--quiet-s", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())
        self.lines.put("<exit>")

    def wait_for(self, text: str, timeout: float = 240.0) -> str:
        seen = []
        while True:
            line = self.lines.get(timeout=timeout)
            seen.append(line)
            if text in line:
                return line
            if line == "<exit>":
                raise AssertionError("the listener ended:\n" + "\n".join(seen))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)


def test_listen_receives_from_the_pacs_and_prepares_the_segmentation(orthanc, demo_stored, tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    files, study, series = demo_stored
    cfg = temporary_config(tmp_path, orthanc, listen_port=orthanc.listen_port)
    listener = _Listener(cfg, tmp_path / "inbox")
    try:
        listener.wait_for("listening")
        # an unknown calling AE title is rejected at the association
        stranger = AE(ae_title="STRANGER")
        stranger.add_requested_context("1.2.840.10008.1.1")
        assoc = stranger.associate("127.0.0.1", orthanc.listen_port, ae_title="PLANNER")
        assert assoc.is_rejected
        # Orthanc sends the series to the listener's AE (a C-MOVE asked of Orthanc)
        ae = AE(ae_title="PLANNER")
        ae.add_requested_context(MOVE)
        assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.ae_title)
        assert assoc.is_established
        q = pydicom.Dataset()
        q.QueryRetrieveLevel, q.StudyInstanceUID, q.SeriesInstanceUID = "SERIES", study, series
        statuses = [s.Status for s, _ in assoc.send_c_move(q, "PLANNER", MOVE) if s is not None]
        assoc.release()
        assert statuses[-1] == 0x0000
        # every acknowledged image is on disk, unchanged
        done = listener.wait_for("series-complete")
        assert f"instances={len(files)}" in done and "sender=ORTHANC" in done
        got = sorted((tmp_path / "inbox" / study / series).glob("*.dcm"))
        original = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in files}
        assert {p.stem for p in got} == set(original)
        _same_instance(original[got[0].stem], got[0])
        line = listener.wait_for("prepared")
        assert "structures=" in line
    finally:
        listener.stop()
    log = [json.loads(x) for x in (tmp_path / "inbox" / "listen.log").read_text().splitlines()]
    assert [e["event"] for e in log][:1] == ["listening"] and log[-1]["event"] == "stopped"
    # a plan on the received CT takes the prepared segmentation instead of segmenting again
    import planner
    from planner.anatomy.cache import cached_segmentation

    ct = planner.load_image(tmp_path / "inbox" / study / series)
    cached = cached_segmentation(ct)
    assert cached is not None and "prepared in advance" in cached.notes[-1]
    assert np.array_equal(cached.mask("lung_left"), planner.segment(ct).mask("lung_left"))


def test_the_plans_seg_and_sr_round_trip_through_the_pacs(orthanc, demo_stored, planned_from_pacs):
    """The structures (DICOM SEG) and the trajectories (Comprehensive 3D SR, TID 1500, SCOORD3D
    polylines) read back from the PACS with highdicom: the plan's own coordinates and masks, in
    the CT's frame of reference; dciodvfy finds no error in either."""
    import highdicom as hd

    import planner

    tmp, cfg, _ = planned_from_pacs
    plan_dir = tmp / "plan"
    doc = json.loads((plan_dir / "plan.json").read_text())
    files, study, series = demo_stored
    ct = planner.load_image(doc["image"]["source"])
    exe = require_tool("dciodvfy", "dicom3tools")
    for name in ("structures.dcm", "trajectories.dcm"):
        run = subprocess.run([exe, str(plan_dir / "dicom" / name)], capture_output=True, text=True)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], (name, errors)
    # through the PACS (pushed by the test before, or now)
    main(["pacs", "push", "pacs", str(plan_dir), "--pacs-config", str(cfg)])
    back = {}
    for name in ("structures.dcm", "trajectories.dcm"):
        uid = str(pydicom.dcmread(plan_dir / "dicom" / name, stop_before_pixels=True).SOPInstanceUID)
        oid = orthanc.find_instance(uid)
        assert oid is not None, name
        back[name] = pydicom.dcmread(io.BytesIO(orthanc.instance_file(oid)))
    # the SR: one polyline per trajectory, entry -> target as plan.json says, in the CT's frame
    sr = hd.sr.Comprehensive3DSR.from_dataset(back["trajectories.dcm"])
    assert sr.StudyInstanceUID == study
    polylines = []

    def walk(items):
        for item in items:
            if item.ValueType == "SCOORD3D":
                polylines.append((np.asarray(item.GraphicData, float).reshape(-1, 3), item.ReferencedFrameOfReferenceUID))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(back["trajectories.dcm"].ContentSequence)
    assert len(polylines) == len(doc["trajectories"])
    for t, (pts, frame) in zip(doc["trajectories"], polylines):
        assert frame == ct.meta.frame_of_reference_uid
        assert np.allclose(pts, [t["entry"], t["target"]], atol=1e-3)
    # the SEG: every structure, its voxels where the plan has them, on the CT's slices
    seg = hd.seg.Segmentation.from_dataset(back["structures.dcm"])
    assert seg.StudyInstanceUID == study and seg.FrameOfReferenceUID == ct.meta.frame_of_reference_uid
    structures = planner.load_structures(plan_dir / "structures.seg.nrrd", ct)
    labels = {d.segment_label: d.segment_number for d in seg.SegmentSequence}
    assert set(labels) == set(structures.names())
    ct_uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    loaded = planner.load_structures(plan_dir / "dicom" / "structures.dcm", ct)  # our own DICOM SEG reader
    for name in structures.names():
        assert np.array_equal(loaded.mask(name), structures.mask(name)), name
    assert {uids[2] for uids in seg.get_source_image_uids()} <= set(ct_uids)


def test_every_acknowledged_image_survives_a_killed_listener(orthanc, demo_stored, tmp_path):
    """Images sent one by one; each success answer means the image is on disk: after SIGKILL
    (no clean-up at all) every acknowledged one is there, whole and unchanged."""
    import signal

    from pynetdicom import AE

    files = demo_stored[0][:6]
    cfg = temporary_config(tmp_path, orthanc, listen_port=free_port())
    listener = _Listener(cfg, tmp_path / "inbox")
    try:
        line = listener.wait_for("listening")
        port = int(line.split("port=")[1].split()[0])
        sender = AE(ae_title=orthanc.ae_title)  # a configured node's AE title
        datasets = [pydicom.dcmread(f) for f in files]
        sender.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
        assoc = sender.associate("127.0.0.1", port, ae_title="PLANNER")
        assert assoc.is_established
        acknowledged = []
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if status is not None and status.Status == 0x0000:
                acknowledged.append(ds)
        assoc.abort()
        listener.proc.send_signal(signal.SIGKILL)
        listener.proc.wait(timeout=60)
    finally:
        if listener.proc.poll() is None:
            listener.proc.kill()
    assert len(acknowledged) == len(files)
    for ds, f in zip(acknowledged, files):
        p = tmp_path / "inbox" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        _same_instance(f, p)


def test_dicom_over_tls(tmp_path, capsys):
    """A node that speaks only DICOM TLS and requires a client certificate: reached with the
    configuration's TLS files; without them the association fails with one clear line."""
    require_tool("openssl", "openssl")
    require_tool("Orthanc", "orthanc")
    from planner.testing.orthanc import make_certificates

    certs = make_certificates(tmp_path / "certs")
    server = start_orthanc(dicomweb=False, tls={"cert": certs["server_cert"], "key": certs["server_key"],
                                                "ca": certs["ca"]})
    try:
        node = f"ae_title = '{server.ae_title}'\nhost = '127.0.0.1'\nport = {server.dicom_port}\n"
        cfg = tmp_path / "tls.toml"
        cfg.write_text(f"timeout_s = 3\n[nodes.secure]\n{node}tls_ca = '{certs['ca']}'\n"
                       f"tls_cert = '{certs['client_cert']}'\ntls_key = '{certs['client_key']}'\n"
                       f"[nodes.plain]\n{node}")
        assert main(["pacs", "echo", "secure", "--pacs-config", str(cfg)]) == 0
        assert "secure (ORTHANC@127.0.0.1" in capsys.readouterr().out
        assert main(["pacs", "find", "secure", "--pacs-config", str(cfg)]) == 0
        assert "no series matches" in capsys.readouterr().out
        assert main(["pacs", "echo", "plain", "--pacs-config", str(cfg)]) == 2
        err = _one_error(capsys)
        assert "PACS node plain" in err and ("aborted" in err or "did not answer" in err)
    finally:
        server.stop()


def test_a_cohort_on_pacs_series_pulls_each_once_though_two_workers_ask_at_once(orthanc, demo_stored, tmp_path,
                                                                                 monkeypatch):
    """``planner batch`` rows whose ct is ``pacs:NODE:SERIES``: both workers start on the same
    series with an empty cache and pull it at the same time; each case plans, the cache keeps one
    complete copy, and a series the node does not hold is that row's error alone."""
    import csv

    monkeypatch.setenv("PLANNER_CACHE", str(tmp_path / "cache"))  # for the worker processes too
    cfg = temporary_config(tmp_path, orthanc, listen_port=orthanc.listen_port)
    series = demo_stored[2]
    rows = [{"case_id": f"pacs-{n}", "ct": f"pacs:pacs:{series}", "procedure": "lung-biopsy",
             "structures": str(DEMO_STRUCTURES), "target_label": "lung_nodule"} for n in range(3)]
    rows.append({"case_id": "gone", "ct": "pacs:pacs:1.2.826.0.1.3680043.8.498.1", "procedure": "lung-biopsy",
                 "structures": str(DEMO_STRUCTURES), "target_label": "lung_nodule"})
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert main(["batch", str(manifest), "--out", str(tmp_path / "out"), "--workers", "2",
                 "--pacs-config", str(cfg)]) == 0
    with open(tmp_path / "out" / "results.csv", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [r["feasible"] for r in table[:3]] == ["True"] * 3, [r["error"] for r in table]
    assert table[3]["feasible"] == "" and "no series" in table[3]["error"]
    copies = list((tmp_path / "cache" / "pacs" / series).iterdir())
    assert len(copies) == 1 and not copies[0].name.startswith("."), copies  # no half copy left behind
    assert len([f for f in copies[0].iterdir() if f.name != "manifest.json"]) == len(demo_stored[0])
