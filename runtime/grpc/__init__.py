"""KServe v2 / Triton gRPC (``inference.GRPCInferenceService``), a protocol layer beside ``runtime.http``.

Needs the ``grpc`` extra (grpcio, protobuf), imported only when ``EDGE_GRPC_PORT`` is set. The messages are
``edge_inference_pb2``, generated from ``edge_inference.proto`` by ``scripts/gen_grpc.sh`` and committed, so the runtime
needs no protoc and no client package.
"""
