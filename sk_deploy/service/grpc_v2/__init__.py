"""KServe v2 over gRPC (the Open Inference Protocol): the vendored ``grpc_predict_v2.proto``, its generated stubs
(``generate``), the requests and answers as protobuf messages (``messages``), the status codes (``status``), the
servicer (``servicer``) and the grpc.aio server beside uvicorn (``server``)."""
