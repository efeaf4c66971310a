"""A real Orthanc PACS on loopback ports for the tests and benchmarks, with a temporary
configuration and storage, stopped (and its storage removed) afterwards.

Orthanc comes from Debian (``orthanc``, ``orthanc-dicomweb``). :func:`find_orthanc` says where
it is (None when it is not installed). Readiness is read from Orthanc's own log ("Orthanc has
started"), not guessed with a delay. Its REST API is used by the tests as an independent way in
and out of the PACS (store a scan, read back what this product sent).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def find_orthanc() -> str | None:
    return shutil.which("Orthanc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its AE title, DICOM and HTTP ports, and REST helpers."""

    ae_title: str
    dicom_port: int
    http_port: int
    folder: Path
    process: subprocess.Popen[bytes]
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self, method: str, path: str, data: bytes | None = None, content_type: str = "application/json"
             ) -> Any:
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type} if data is not None else {})
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
        if r.headers.get_content_type() == "application/json":
            return json.loads(body)
        return body

    def store_files(self, files: list[Path]) -> list[str]:
        """Store DICOM files through the REST API; their Orthanc instance ids."""
        return [self.rest("POST", "/instances", Path(f).read_bytes(), "application/dicom")["ID"] for f in files]

    def instances(self) -> list[str]:
        return list(self.rest("GET", "/instances"))

    def instance_file(self, orthanc_id: str) -> bytes:
        return bytes(self.rest("GET", f"/instances/{orthanc_id}/file"))

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        return dict(self.rest("GET", f"/instances/{orthanc_id}/simplified-tags"))

    def find_instance(self, sop_instance_uid: str) -> str | None:
        got = self.rest("POST", "/tools/lookup", sop_instance_uid.encode(), "text/plain")
        return next((g["ID"] for g in got if g.get("Type") == "Instance"), None)

    def clear(self) -> None:
        for p in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{p}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_orthanc(ae_title: str = "ORTHANC", modalities: dict[str, tuple[str, str, int]] | None = None,
                  timeout_s: float = 60.0, dicomweb: bool = True, tls: dict[str, Path] | None = None) -> Orthanc:
    """Start Orthanc with a fresh storage; ``modalities``: name -> (AE title, host, port) of the
    DICOM nodes it knows (for C-MOVE destinations and accepted callers). ``tls``: DICOM over TLS
    only, with ``cert``, ``key`` (the server's) and ``ca`` (whose client certificates it requires)."""
    exe = find_orthanc()
    if exe is None:
        raise FileNotFoundError("Orthanc is not installed (Debian packages orthanc, orthanc-dicomweb)")
    folder = Path(tempfile.mkdtemp(prefix="orthanc-"))
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "planner-tests", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": ae_title, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": True, "HttpTimeout": 60,
        "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True, "UnknownSopClassAccepted": True,
        "StableAge": 1, "OverwriteInstances": True,
        "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb and DICOMWEB_PLUGIN.exists() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    if tls is not None:
        config.update({"DicomTlsEnabled": True, "DicomTlsCertificate": str(tls["cert"]),
                       "DicomTlsPrivateKey": str(tls["key"]), "DicomTlsTrustedCertificates": str(tls["ca"]),
                       "DicomTlsRemoteCertificateRequired": True})
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=1))
    proc = subprocess.Popen([exe, "--verbose", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    server = Orthanc(ae_title, dicom_port, http_port, folder, proc)
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            server.log.append(line)
            if "Orthanc has started" in line:
                started.set()
        started.set()  # the process ended: wake the waiter

    threading.Thread(target=read, daemon=True).start()
    if not started.wait(timeout_s) or proc.poll() is not None:
        server.stop()
        raise RuntimeError("Orthanc did not start:\n" + "\n".join(server.log[-20:]))
    return server


def temporary_config(folder: Path, orthanc: Orthanc, listen_port: int | None = None, ae_title: str = "PLANNER",
                     name: str = "pacs", extra: str = "") -> Path:
    """A PACS configuration file naming ``orthanc`` as node ``name``."""
    path = folder / "pacs.toml"
    path.write_text(
        f'ae_title = "{ae_title}"\nlisten_port = {listen_port or free_port()}\ntimeout_s = 10\n{extra}\n'
        f'[nodes.{name}]\nae_title = "{orthanc.ae_title}"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n'
        f'dicomweb_url = "{orthanc.dicomweb_url}"\n', "utf-8")
    return path



def make_certificates(folder: Path) -> dict[str, Path]:
    """A test CA and, signed by it, a server certificate for 127.0.0.1 and a client certificate
    (openssl); the paths by name: ca, server_cert, server_key, client_cert, client_key."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=planner test CA",
        "-keyout", "ca.key", "-out", "ca.crt", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out",
            f"{name}.csr")
        (folder / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-out", f"{name}.crt", "-extfile", f"{name}.ext")
    return {"ca": folder / "ca.crt", "server_cert": folder / "server.crt", "server_key": folder / "server.key",
            "client_cert": folder / "client.crt", "client_key": folder / "client.key"}
