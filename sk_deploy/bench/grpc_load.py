"""KServe v2 ModelInfer over gRPC for the open-loop load (``bench-http --protocol grpc``): tritonclient's asyncio
client, each picture turned client-side into the input tensor the server's ModelMetadata describes, sent as
``raw_input_contents``.

A tensor is what a Triton user sends: the picture's short side resized to crop / 0.875 and centre-cropped to the
model's height and width, then either float32 NCHW normalised with the ImageNet mean and std (an ``FP32``
input) or the uint8 NHWC crop (a ``UINT8`` input, a graph that normalises itself). The tensors are made once,
before the steps, so that the load measures the server, not the client's decoding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sk_deploy.bench.http_load import LoadError, Payload, is_loopback

#: the ratio of crop to resize that timm's and torchvision's evaluation uses (224 of 256)
CROP_RATIO = 0.875


def check_target(target: str | None, allow_remote: bool = False) -> str:
    """``HOST:PORT`` of a gRPC server, checked: a LoadError for a missing or malformed one, or a host that is
    not loopback while ``allow_remote`` is off."""
    if not target:
        raise LoadError("--protocol grpc needs --grpc-url HOST:PORT: the server's gRPC port (serve --grpc-port)")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise LoadError(f"{target!r} is not HOST:PORT, e.g. 127.0.0.1:8001")
    if not allow_remote and not is_loopback(host):
        raise LoadError(f"{host} is not a loopback address: load goes to 127.0.0.1 / localhost / ::1 unless "
                        "--allow-remote is given (and only to a server you run)")
    return target


def input_tensor(payload: Payload, datatype: str, shape: list[int]) -> np.ndarray:
    """``payload``'s picture as a batch of one of the model's input: ``shape`` is ModelMetadata's (batch axis
    first, -1); FP32 takes NCHW, UINT8 takes NHWC."""
    from sk_deploy.images import Preprocess, load_picture

    if datatype not in ("FP32", "UINT8") or len(shape) != 4:
        raise LoadError(f"the model takes {datatype} {shape}; the gRPC load sends FP32 NCHW or UINT8 NHWC pictures")
    height, width = (shape[1], shape[2]) if datatype == "UINT8" else (shape[2], shape[3])
    if height != width or height < 1:
        raise LoadError(f"the model takes {height}x{width} pictures; the gRPC load makes square crops only")
    spec = Preprocess(resize=round(height / CROP_RATIO), crop=height)
    return load_picture(payload.data, spec, uint8_nhwc=datatype == "UINT8")[None]


class GrpcSender:
    """ModelInfer requests for one model, one prepared input per picture; ``send`` answers ``OK`` or the gRPC
    status code's name (RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED, ...)."""

    def __init__(self, client: Any, model: str, inputs: list[Any], outputs: list[Any]) -> None:
        self.client, self.model, self.inputs, self.outputs = client, model, inputs, outputs

    @classmethod
    async def open(cls, target: str, model: str, payloads: list[Payload]) -> GrpcSender:
        """A sender for ``model`` at ``target``, its inputs made from ``payloads`` as ModelMetadata describes."""
        try:
            import tritonclient.grpc.aio as grpcclient
            from tritonclient.utils import InferenceServerException
        except ImportError as exc:
            raise LoadError(f"--protocol grpc needs tritonclient and grpcio ({exc.name} is missing): pip install "
                            "'sk-deploy[bench]'") from None
        client = grpcclient.InferenceServerClient(url=target)
        try:
            metadata = await client.get_model_metadata(model)
        except InferenceServerException as exc:
            await client.close()
            raise LoadError(f"{target}: ModelMetadata of {model!r} failed ({_code(exc)}: {exc.message()}); is "
                            "`sk-deploy serve --grpc-port` listening there?") from None
        spec = metadata.inputs[0]
        inputs = []
        for payload in payloads:
            array = input_tensor(payload, spec.datatype, list(spec.shape))
            item = grpcclient.InferInput(spec.name, list(array.shape), spec.datatype)
            item.set_data_from_numpy(array)
            inputs.append(item)
        outputs = [grpcclient.InferRequestedOutput(metadata.outputs[0].name)]
        return cls(client, model, inputs, outputs)

    async def send(self, index: int) -> str:
        """ModelInfer on picture ``index`` (round robin); ``OK`` or the status code's name."""
        from tritonclient.utils import InferenceServerException

        try:
            await self.client.infer(self.model, [self.inputs[index % len(self.inputs)]], outputs=self.outputs)
        except InferenceServerException as exc:
            return _code(exc)
        return "OK"

    async def close(self) -> None:
        """Close the channel."""
        await self.client.close()


def _code(exc: Any) -> str:
    """``StatusCode.RESOURCE_EXHAUSTED`` -> ``RESOURCE_EXHAUSTED``; ``transport`` when there is none."""
    return str(exc.status() or "transport").removeprefix("StatusCode.")
