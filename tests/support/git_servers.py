"""Real Git servers on loopback: smart HTTP(S) through git's own `git http-backend` (run as a
CGI by a small standard-library HTTP server), and SSH through a private, throwaway `sshd`.

Nothing here listens anywhere but 127.0.0.1, and every server stops when its context ends.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import hmac
import ipaddress
import json
import os
import pty
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from tests.support.gitrepo import free_port

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
START_SECONDS = 10.0
SSHD = Path("/usr/sbin/sshd")

# The server side's git: no system or user config (the CI user's ~/.gitconfig stays out).
_SERVER_GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "LC_ALL": "C",
}


@functools.cache
def http_backend() -> Path:
    """git's smart-HTTP CGI program (/usr/lib/git-core/git-http-backend on Debian)."""
    out = subprocess.run(["git", "--exec-path"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip()) / "git-http-backend"


# --- TLS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    """A private CA (`ca`, the file an operator would tell git to trust) and a server
    certificate it signed for 127.0.0.1 and localhost (`cert`, `key`)."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls(folder: Path, name: str = "syncd-test") -> Tls:
    """Generate a private CA and a loopback server certificate under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    tls = Tls(folder / f"{name}-ca.pem", folder / f"{name}-cert.pem", folder / f"{name}-key.pem")
    try:
        import cryptography  # noqa: F401
    except ImportError:  # pragma: no cover - moto[server] (the test extra) requires it
        _make_tls_openssl(tls, name)
    else:
        _make_tls_cryptography(tls, name)
    return tls


def _make_tls_cryptography(tls: Tls, name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    tls.ca.write_bytes(ca_cert.public_bytes(pem))
    tls.cert.write_bytes(cert.public_bytes(pem))
    tls.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _make_tls_openssl(tls: Tls, name: str) -> None:  # pragma: no cover - fallback
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca_key = tls.ca.with_suffix(".key")
    csr = tls.cert.with_suffix(".csr")
    ext = tls.cert.with_suffix(".ext")
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        f"subjectAltName=IP:{LOOPBACK},DNS:localhost\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key))
    openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", "1",
        "-subj", f"/CN={name} CA", "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(tls.ca),
    )  # fmt: skip
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(tls.key))
    openssl("req", "-new", "-key", str(tls.key), "-subj", f"/CN={LOOPBACK}", "-out", str(csr))
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(tls.ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-sha256", "-extfile", str(ext), "-out", str(tls.cert),
    )  # fmt: skip


# --- smart HTTP(S) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    user: str | None  # the Basic-auth user the server accepted, None when anonymous
    status: int


@dataclass
class GitHttpServer:
    """`git http-backend` serving every repository under `root` at `base`/<name>."""

    scheme: str
    port: int
    root: Path
    requests: list[Request] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    def url(self, repo: str, user: str | None = None, password: str | None = None) -> str:
        userinfo = ""
        if user is not None:
            userinfo = quote(user, safe="")
            if password is not None:
                userinfo += ":" + quote(password, safe="")
            userinfo += "@"
        return f"{self.scheme}://{userinfo}{LOOPBACK}:{self.port}/{repo}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    git: GitHttpServer
    credentials: tuple[str, str] | None
    tls: ssl.SSLContext | None
    lock: threading.Lock

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, so a client that
        # stalls or refuses the certificate never blocks the accept loop.
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(START_SECONDS)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()


class _GitCgi(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = START_SECONDS
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _user(self) -> tuple[bool, str | None]:
        """(allowed, the authenticated user)."""
        expected = self.server.credentials
        if expected is None:
            return True, None
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except ValueError:
            return False, None
        ok = hmac.compare_digest(user, expected[0]) & hmac.compare_digest(password, expected[1])
        return ok, user if ok else None

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "status"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _record(self, status: int, user: str | None) -> None:
        with self.server.lock:
            self.server.git.requests.append(
                Request(self.command, urlsplit(self.path).path, user, status)
            )

    def _serve(self) -> None:
        body = self._body()
        allowed, user = self._user()
        if not allowed:
            self._record(401, None)
            self._send(401, [("WWW-Authenticate", 'Basic realm="git"')], b"")
            return
        parts = urlsplit(self.path)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **_SERVER_GIT_ENV,
            "GIT_PROJECT_ROOT": str(self.server.git.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": self.request_version,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": unquote(parts.path),
            "QUERY_STRING": parts.query,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_LENGTH": str(len(body)),
        }
        if user is not None:
            env["REMOTE_USER"] = user
            env["AUTH_TYPE"] = "Basic"
        for header, variable in (
            ("Content-Type", "CONTENT_TYPE"),
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
            ("Git-Protocol", "HTTP_GIT_PROTOCOL"),
        ):
            if value := self.headers.get(header):
                env[variable] = value
        if "HTTP_GIT_PROTOCOL" in env:
            env["GIT_PROTOCOL"] = env["HTTP_GIT_PROTOCOL"]
        proc = subprocess.run(
            [str(http_backend())],
            input=body,
            env=env,
            capture_output=True,
            timeout=START_SECONDS * 3,
            check=False,
        )
        head, payload = _split_cgi(proc.stdout)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name.strip(), value.strip()))
        if proc.returncode != 0 and not head:
            status, payload = 500, proc.stderr
        self._record(status, user)
        self._send(status, headers, payload)


def _split_cgi(out: bytes) -> tuple[bytes, bytes]:
    ends = [(out.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if sep in out]
    if not ends:
        return b"", out
    at, sep = min(ends)
    return out[:at], out[at + len(sep) :]


@contextmanager
def git_http_server(
    root: Path, credentials: tuple[str, str] | None = None, tls: Tls | None = None
) -> Iterator[GitHttpServer]:
    """Smart HTTP (HTTPS with `tls`) on 127.0.0.1, optionally behind HTTP Basic auth
    (`credentials` = (user, password)); serves the bare repositories under `root`."""
    assert http_backend().is_file(), f"{http_backend()} is missing"
    httpd = _Server((LOOPBACK, 0), _GitCgi)  # listening once constructed
    info = GitHttpServer("https" if tls else "http", int(httpd.server_port), root)
    httpd.git = info
    httpd.credentials = credentials
    httpd.tls = tls.server_context() if tls else None
    httpd.lock = threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, name="git-http", daemon=True)
    thread.start()
    try:
        yield info
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(START_SECONDS)


# --- SSH -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshKey:
    private: Path

    @property
    def public(self) -> Path:
        return self.private.with_name(self.private.name + ".pub")

    @property
    def public_line(self) -> str:
        """The key as an authorized_keys line: `ssh-ed25519 AAAA... comment`."""
        return self.public.read_text().strip()


def ssh_key(path: Path, comment: str = "syncd-test", passphrase: str = "") -> SshKey:
    """A new ed25519 key pair at `path` and `path`.pub (no passphrase unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return SshKey(path)


@dataclass(frozen=True)
class SshServer:
    port: int
    host_key: SshKey
    user: str
    log: Path

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@{LOOPBACK}:{self.port}{path}"

    def known_hosts_line(self, key: SshKey | None = None) -> str:
        """The known_hosts line naming this server with `key` (its own host key by default)."""
        kind, blob = (key or self.host_key).public_line.split()[:2]
        return f"[{LOOPBACK}]:{self.port} {kind} {blob}"


def ssh_command(key: SshKey, known_hosts: Path) -> str:
    """The GIT_SSH_COMMAND an operator sets for a deploy key and a pinned host key. `-F
    /dev/null` and the IdentitiesOnly/GlobalKnownHostsFile options keep the CI machine's own
    ssh configuration, keys and agent out of the test."""
    return (
        f"ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i {key.private} "
        f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
        "-o StrictHostKeyChecking=yes"
    )


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until sshd answers with its SSH banner (bounded)."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0) as conn:
                if conn.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.02)


@contextmanager
def sshd(folder: Path, authorized: list[SshKey]) -> Iterator[SshServer]:
    """A private sshd on 127.0.0.1 (free port) that lets the current user in with any of the
    `authorized` keys, public-key authentication only."""
    assert SSHD.is_file(), f"{SSHD} is missing: apt-get install openssh-server"
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # sshd running as root insists on its privilege-separation folder, which Debian's
        # init scripts (not the package) create; it is compiled in, not configurable.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = ssh_key(folder / "ssh_host_ed25519_key", "syncd-test-host")
    authorized_keys = folder / "authorized_keys"
    authorized_keys.write_text("".join(f"{key.public_line}\n" for key in authorized))
    user = subprocess.run(["id", "-un"], check=True, capture_output=True, text=True).stdout
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress {LOOPBACK}\n"
        f"Port {port}\n"
        f"HostKey {host_key.private}\n"
        f"PidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        "AuthenticationMethods publickey\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "HostbasedAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "AcceptEnv GIT_PROTOCOL\n"
        "LogLevel VERBOSE\n"
    )
    log = folder / "sshd.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_banner(port, proc, log)
        yield SshServer(port, host_key, user.strip(), log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=START_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- a terminal ----------------------------------------------------------------------------

_FETCH_IN_A_TERMINAL = """
import fcntl, json, sys, termios
from pathlib import Path
from syncd.core.config import RepoConfig
from syncd.sources.git import GitSource

fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty on stdin becomes the controlling terminal
source = GitSource(RepoConfig(name="app", url=sys.argv[1]), Path(sys.argv[2]))
try:
    outcome = {"commit": source.fetch().commit}
except Exception as exc:
    outcome = {"error": type(exc).__name__, "message": str(exc)}
print("OUTCOME " + json.dumps(outcome), flush=True)
"""


@dataclass(frozen=True)
class TerminalRun:
    finished: bool  # False: still running at the deadline (then killed), e.g. at a prompt
    outcome: dict[str, str] | None  # {"commit": ...} or {"error": type, "message": ...}
    transcript: str  # everything written to the terminal
    elapsed: float


def fetch_in_terminal(url: str, state: Path, seconds: float) -> TerminalRun:
    """`GitSource(url, state).fetch()` in a child process that has a controlling terminal (a
    fresh pty), as when an operator runs syncd from a shell: whatever prompts (ssh asking to
    trust a host key or for a passphrase) prompts there and waits. The child and everything
    it started are killed at the deadline. The environment is this process's."""
    master, slave = pty.openpty()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", _FETCH_IN_A_TERMINAL, url, str(state)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while (left := start + seconds - time.monotonic()) > 0:
            ready, _, _ = select.select([master], [], [], min(left, 0.5))
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every process holding the terminal has closed it
                data = b""
            if not data:
                break
            chunks.append(data)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, start + seconds - time.monotonic()))
        elapsed = time.monotonic() - start
        finished = proc.poll() is not None and elapsed < seconds
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the child's own session and group
            proc.wait()
        os.close(master)
    transcript = b"".join(chunks).decode("utf-8", "replace")
    outcome = None
    for line in transcript.splitlines():
        if line.startswith("OUTCOME "):
            outcome = json.loads(line.removeprefix("OUTCOME "))
    return TerminalRun(finished, outcome, transcript, elapsed)
