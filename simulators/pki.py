"""A throwaway certificate authority for the demo and the tests: a CA, a server certificate
for localhost/127.0.0.1/::1 and client certificates, written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KeyPair:
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class TestPKI:
    __test__ = False  # a fixture type, not a pytest test class
    ca_file: str
    server: KeyPair
    client: KeyPair
    # Signed by a different CA: must be refused wherever mutual TLS is required.
    rogue_client: KeyPair
    rogue_ca_file: str
    # Signed by the same CA for another workload (a cluster-wide issuer's): allowed_client_names
    # keeps it out.
    other_client: KeyPair


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    server: bool,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(common_name)]
    if server:
        names = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write_pair(
    directory: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> KeyPair:
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return KeyPair(str(cert_path), str(key_path))


def make_test_pki(directory: str | Path) -> TestPKI:
    """Create a CA, a localhost server certificate and good and rogue client certificates."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca("serving-guard test CA")
    (root / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server = _write_pair(root, "server", *_issue(ca_key, ca_cert, "localhost", server=True))
    client = _write_pair(root, "client", *_issue(ca_key, ca_cert, "falco", server=False))
    other = _write_pair(root, "other-client", *_issue(ca_key, ca_cert, "model-registry", server=False))
    rogue_ca_key, rogue_ca_cert = _make_ca("rogue CA")
    (root / "rogue-ca.crt").write_bytes(rogue_ca_cert.public_bytes(serialization.Encoding.PEM))
    rogue = _write_pair(root, "rogue-client", *_issue(rogue_ca_key, rogue_ca_cert, "falco", server=False))
    return TestPKI(
        ca_file=str(root / "ca.crt"),
        server=server,
        client=client,
        rogue_client=rogue,
        rogue_ca_file=str(root / "rogue-ca.crt"),
        other_client=other,
    )
