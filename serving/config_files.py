"""TF Serving's auxiliary config files (SSL, monitoring, batching), so the same files work here.

tensorflow-serving-api ships only the model-server config protos, so SSLConfig and
MonitoringConfig are rebuilt here as tiny dynamic proto classes with TF Serving's
field names, and BatchingParameters is read by its ``name { value: N }`` shape.
"""
from __future__ import annotations

import dataclasses
import os
import re
import ssl
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from serving.models import BatchingOptions


def _message_class(name: str, fields, nested=()):
    """Builds tiny proto classes for SSLConfig / MonitoringConfig (not shipped in tensorflow-serving-api)."""
    fdp = descriptor_pb2.FileDescriptorProto(name=f"serving_local_{name}.proto", package="tensorflow.serving")
    for msg_name, msg_fields in list(nested) + [(name, fields)]:
        msg = fdp.message_type.add(name=msg_name)
        for i, (fname, ftype) in enumerate(msg_fields, start=1):
            f = msg.field.add(name=fname, number=i, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            if ftype in ("string", "bool"):
                f.type = getattr(descriptor_pb2.FieldDescriptorProto, "TYPE_" + ftype.upper())
            else:
                f.type, f.type_name = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, f".tensorflow.serving.{ftype}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))


def read_ssl_config(path: str):
    cls = _message_class("SSLConfig", [("server_key", "string"), ("server_cert", "string"),
                                       ("custom_ca", "string"), ("client_verify", "bool")])
    with open(path) as f:
        return text_format.Parse(f.read(), cls())


def read_monitoring_config(path: str):
    cls = _message_class("MonitoringConfig", [("prometheus_config", "PrometheusConfig")],
                         nested=[("PrometheusConfig", [("enable", "bool"), ("path", "string")])])
    with open(path) as f:
        return text_format.Parse(f.read(), cls())


def batching_from_file(path: str, base: BatchingOptions) -> BatchingOptions:
    """Overrides ``base`` with the fields set in a BatchingParameters text proto."""
    with open(path) as f:
        text = f.read()
    values = {k: int(v) for k, v in re.findall(r"(\w+)\s*\{\s*value\s*:\s*(\d+)\s*\}", text)}
    fields = {f.name for f in dataclasses.fields(BatchingOptions)}
    return dataclasses.replace(base, **{k: v for k, v in values.items() if k in fields})


def ssl_context(tls) -> ssl.SSLContext:
    """Server-side context for REST from (key PEM, cert PEM, CA PEM or None, require client cert)."""
    key, cert, ca, verify = tls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as d:  # ssl wants files; TF Serving's config carries PEM text
        kp, cp = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
        for path, data in ((kp, key), (cp, cert)):
            with open(path, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cp, kp)
    if ca:
        ctx.load_verify_locations(cadata=ca.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_OPTIONAL
    return ctx
