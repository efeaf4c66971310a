"""The PACS nodes this product talks to: a TOML file (``--pacs-config``, by default
``~/.config/planner/pacs.toml``).

::

    ae_title = "PLANNER"          # this product's own AE title (at most 16 characters)
    listen_port = 11112           # where `planner listen` (and C-MOVE to us) receives
    storage = "~/planner-inbox"   # optional: where `planner listen` writes what it receives

    [nodes.pacs]
    ae_title = "ORTHANC"
    host = "127.0.0.1"
    port = 4242
    dicomweb_url = "http://127.0.0.1:8042/dicom-web"   # optional: QIDO-RS, WADO-RS, STOW-RS
    tls_ca = "/etc/ssl/hospital-ca.pem"                # optional TLS files (DIMSE over TLS)
    tls_cert = "/etc/ssl/planner.pem"
    tls_key = "/etc/ssl/planner.key"

Every mistake is reported with the file, the key and what is allowed (``InputError``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, brief

DEFAULT_PATH = Path("~/.config/planner/pacs.toml")
DEFAULT_AE_TITLE = "PLANNER"
DEFAULT_LISTEN_PORT = 11112
#: Seconds before a node that does not answer is given up (connection, association, each message).
DEFAULT_TIMEOUT_S = 10.0


def _ae_title(value: Any, where: str) -> str:
    """An AE title: 1-16 characters of the DICOM default repertoire, no backslash, not blank."""
    if not isinstance(value, str):
        raise InputError(f"{where}: an AE title must be text, got {brief(repr(value), 40)}")
    v = value.strip()
    if not v or len(v) > 16 or "\\" in v or not all(32 <= ord(c) < 127 for c in v):
        raise InputError(f"{where}: AE title {brief(repr(value), 40)} must be 1-16 printable ASCII characters "
                         "without a backslash")
    return v


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InputError(f"{where}: a port must be a whole number 1-65535, got {brief(repr(value), 40)}")
    return value


@dataclass(frozen=True)
class Node:
    """A PACS node: where to reach it by DIMSE, and by DICOMweb when it has a URL."""

    name: str
    ae_title: str
    host: str
    port: int
    dicomweb_url: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    def describe(self) -> str:
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port}{', TLS' if self.tls else ''})"


@dataclass(frozen=True)
class PacsConfig:
    """The whole file: this product's AE title and listening port, and the nodes by name."""

    ae_title: str = DEFAULT_AE_TITLE
    listen_port: int = DEFAULT_LISTEN_PORT
    nodes: dict[str, Node] = field(default_factory=dict)
    storage: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    source: str = ""

    def node(self, name: str) -> Node:
        if name not in self.nodes:
            known = ", ".join(sorted(self.nodes)) or "none"
            raise InputError(f"{self.source or 'PACS configuration'}: no node named {brief(repr(name), 40)} "
                             f"(nodes: {known})")
        return self.nodes[name]

    def calling_ae_titles(self) -> set[str]:
        """The AE titles `planner listen` accepts associations from: the configured nodes'."""
        return {n.ae_title for n in self.nodes.values()}


_TOP = {"ae_title", "listen_port", "nodes", "storage", "timeout_s"}
_NODE = {"ae_title", "host", "port", "dicomweb_url", "tls_ca", "tls_cert", "tls_key"}


def _file(value: Any, where: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: expected a file path")
    p = Path(os.path.expanduser(value))
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise InputError(f"{where}: {p} is not a readable file")
    return p


def parse_config(data: dict[str, Any], source: str = "", base: Path | None = None) -> PacsConfig:
    """A :class:`PacsConfig` from the parsed TOML; ``base`` resolves relative file paths."""
    base = base or Path.cwd()
    unknown = set(data) - _TOP
    if unknown:
        raise InputError(f"{source}: unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(_TOP))})")
    ae = _ae_title(data.get("ae_title", DEFAULT_AE_TITLE), f"{source}: ae_title")
    port = _port(data.get("listen_port", DEFAULT_LISTEN_PORT), f"{source}: listen_port")
    timeout = data.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.5 <= float(timeout) <= 600:
        raise InputError(f"{source}: timeout_s must be a number of seconds 0.5-600")
    storage = data.get("storage")
    if storage is not None:
        if not isinstance(storage, str) or not storage:
            raise InputError(f"{source}: storage must be a folder path")
        storage = Path(os.path.expanduser(storage))
        storage = storage if storage.is_absolute() else base / storage
    nodes_raw = data.get("nodes", {})
    if not isinstance(nodes_raw, dict):
        raise InputError(f"{source}: [nodes.NAME] tables expected")
    nodes: dict[str, Node] = {}
    for name, n in nodes_raw.items():
        where = f"{source}: [nodes.{name}]"
        if not isinstance(n, dict):
            raise InputError(f"{where}: expected a table with ae_title, host and port")
        unknown = set(n) - _NODE
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(_NODE))})")
        for key in ("ae_title", "host", "port"):
            if key not in n:
                raise InputError(f"{where}: {key} is missing")
        host = n["host"]
        if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host.strip()):
            raise InputError(f"{where}: host must be a host name or address")
        url = n.get("dicomweb_url")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise InputError(f"{where}: dicomweb_url must start with http:// or https://")
        tls = {k: _file(n[k], f"{where}: {k}", base) for k in ("tls_ca", "tls_cert", "tls_key") if k in n}
        if ("tls_cert" in tls) != ("tls_key" in tls):
            raise InputError(f"{where}: tls_cert and tls_key go together")
        nodes[str(name)] = Node(str(name), _ae_title(n["ae_title"], f"{where}: ae_title"), host.strip(),
                                _port(n["port"], f"{where}: port"), url.rstrip("/") if url else None, **tls)
    return PacsConfig(ae, port, nodes, storage, float(timeout), source)


def load_config(path: str | os.PathLike[str] | None = None) -> PacsConfig:
    """Read the PACS configuration (``path``, or the default file)."""
    p = Path(os.path.expanduser(str(path if path is not None else DEFAULT_PATH)))
    if not p.is_file():
        raise InputError(f"{p}: no PACS configuration there; write one (see the README, 'PACS') or give "
                         "--pacs-config PATH")
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text ({brief(exc)})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML: {brief(exc)}") from None
    return parse_config(data, str(p), p.parent)
