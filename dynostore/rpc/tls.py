"""TLS for every server and client: credentials from PEM files, and certificates for a deployment.

`dynostore certs DIR` makes a CA and one server certificate (for the names and
addresses given) with ``cryptography``; servers take ``--tls-cert/--tls-key``
(and ``--tls-ca`` to trust the others), clients ``--tls-ca``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dynostore.errors import InvalidArgument


@dataclass(frozen=True)
class Tls:
    """PEM material: the CA to trust, and this process's own certificate and key (servers)."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def load(
        cls, ca: Path | None, cert: Path | None = None, key: Path | None = None, *, setting: str = "tls"
    ) -> Tls | None:
        """Read the files; None when no TLS setting is given.

        ``setting`` is how the settings are named (``tls`` for ``tls_ca`` ...),
        for the error messages.

        Raises:
            InvalidArgument: a file is missing, or only one of cert and key is given.
        """
        if ca is None and cert is None and key is None:
            return None
        if (cert is None) != (key is None):
            raise InvalidArgument(f"TLS needs both {setting}_cert and {setting}_key (or neither).")
        if ca is None:
            raise InvalidArgument(f"TLS needs {setting}_ca: the CA that signed the other side's certificate.")

        def read(path: Path, what: str) -> bytes:
            try:
                return path.read_bytes()
            except OSError as exc:
                raise InvalidArgument(f"Cannot read the TLS {what} {path}: {exc}") from None

        return cls(
            read(ca, f"CA certificate ({setting}_ca)"),
            read(cert, f"certificate ({setting}_cert)") if cert else None,
            read(key, f"key ({setting}_key)") if key else None,
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials for a server (needs cert and key)."""
        if self.cert is None or self.key is None:
            raise InvalidArgument("A TLS server needs tls_cert and tls_key.")
        return grpc.ssl_server_credentials([(self.key, self.cert)])

    def channel_credentials(self, present_certificate: bool = False) -> grpc.ChannelCredentials:
        """Credentials for a client that trusts the CA (and, if asked, shows its own certificate)."""
        if present_certificate and self.cert is not None:
            return grpc.ssl_channel_credentials(self.ca, private_key=self.key, certificate_chain=self.cert)
        return grpc.ssl_channel_credentials(root_certificates=self.ca)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_certs(directory: Path, hosts: list[str], days: int = 365) -> dict[str, Path]:
    """Write ``ca.pem``, ``ca-key.pem``, ``server.pem`` and ``server-key.pem`` into ``directory``.

    The server certificate names every host (DNS name or IP address) in ``hosts``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DynoStore CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "dynostore")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # Also a client certificate: a gateway shows it to an etcd that checks its clients.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private = {
        "encoding": pem,
        "format": serialization.PrivateFormat.PKCS8,
        "encryption_algorithm": serialization.NoEncryption(),
    }
    paths = {
        "ca": directory / "ca.pem",
        "ca_key": directory / "ca-key.pem",
        "cert": directory / "server.pem",
        "key": directory / "server-key.pem",
    }
    _write(paths["ca"], ca.public_bytes(pem))
    _write(paths["ca_key"], ca_key.private_bytes(**private), private=True)  # type: ignore[arg-type]
    _write(paths["cert"], server.public_bytes(pem))
    _write(paths["key"], server_key.private_bytes(**private), private=True)  # type: ignore[arg-type]
    return paths
