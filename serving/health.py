"""The standard gRPC health service (``grpc.health.v1.Health/Check``) for --enable_grpc_healthcheck_service.

grpcio-health-checking is not in the stack, so the two messages are declared here with the
standard proto's package, names and field numbers (wire compatible with every health client:
``grpc_health_probe``, Kubernetes gRPC probes). TF Serving reports SERVING for its two
services once started; so does this, and NOT_FOUND for names it does not know (as the
reference implementation does).
"""
from __future__ import annotations

from typing import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVING = 1


def _messages():
    f = descriptor_pb2.FileDescriptorProto(name="serving_local_health.proto", package="grpc.health.v1",
                                           syntax="proto3")
    req = f.message_type.add(name="HealthCheckRequest")
    req.field.add(name="service", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    resp = f.message_type.add(name="HealthCheckResponse")
    enum = resp.enum_type.add(name="ServingStatus")
    for i, n in enumerate(["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]):
        enum.value.add(name=n, number=i)
    resp.field.add(name="status", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_ENUM,
                   type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
                   label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
            get(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")))


HealthCheckRequest, HealthCheckResponse = _messages()


def add_health_service(server: grpc.Server, services: Iterable[str]) -> None:
    """Registers ``grpc.health.v1.Health/Check`` answering SERVING for ``services``."""
    known = set(services)

    def check(request, context):
        if request.service not in known:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return HealthCheckResponse(status=SERVING)

    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=HealthCheckRequest.FromString,
                                                     response_serializer=HealthCheckResponse.SerializeToString)})
    server.add_generic_rpc_handlers((handler,))
