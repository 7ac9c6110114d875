"""TLS: the server speaks gRPC and HTTPS with a certificate; the client verifies it with the CA."""
import datetime
import ipaddress

import numpy as np
import pytest

from serving.client import ServingClient
from serving.testing import start_server

from .conftest import install_version


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_grpc_and_rest(model_src, tmp_path):
    pytest.importorskip("cryptography")
    cert, key = _self_signed(tmp_path)
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1)
    with start_server(model_base_path=base, model_name="toy", ssl_cert=cert, ssl_key=key) as srv:
        assert srv.rest_url.startswith("https://")
        inputs = {"user_id": np.array(["t"]), "timestamp": np.array([1])}
        assert ServingClient(srv.grpc_address, ssl_ca=cert).predict("toy", inputs)["item_ids"][0, 0] == b"t-0"
        assert ServingClient(rest=srv.rest_url, ssl_ca=cert).predict("toy", inputs)["item_ids"][0, 0] == b"t-0"
        with pytest.raises(Exception):  # plaintext client against a TLS server fails
            ServingClient(srv.grpc_address, timeout=2).predict("toy", inputs)
