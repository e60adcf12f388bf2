"""Regenerate the Python stubs of ``grpc_predict_v2.proto`` beside it (grpcio-tools, the dev extra):

    python -m sk_deploy.service.grpc_v2.generate           # rewrite grpc_predict_v2_pb2{.py,.pyi,_grpc.py}
    python -m sk_deploy.service.grpc_v2.generate --check   # exit 1 if the committed stubs differ

protoc's output is kept as it is but for one line: the messages are built in a descriptor pool of their own
instead of protobuf's default one. tritonclient.grpc registers Triton's own definition of the same package
(``inference``) in the default pool, and two files defining ``inference.ModelInferRequest`` there cannot both load
in one process (a test run, or a user's program with tritonclient and sk-deploy); the wire format does not care.

The stubs are made by grpcio-tools ``GRPCIO_TOOLS`` (the dev extra pins it), whose protoc writes protobuf 6.30.0
gencode: the oldest runtime that tritonclient[grpc] 2.73 allows (``>=6.30,<7``), which protobuf 7 runtimes load
too, so sk-deploy and Triton's client share one environment. A newer grpcio-tools would raise the protobuf the
stubs need past what tritonclient accepts; the generator refuses any other version.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # the folder holding the sk_deploy package: protoc names modules from it
PROTO = HERE / "grpc_predict_v2.proto"
STUBS = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")
GRPCIO_TOOLS = "1.72.1"
"""The grpcio-tools that makes the stubs (protobuf gencode 6.30.0; grpcio 1.72.1 or newer at run time)."""
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = ("# sk-deploy: a pool of its own, not the default one (see sk_deploy/service/grpc_v2/generate.py)\n"
             "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile(")


def generate() -> dict[str, str]:
    """The stubs' names and texts as protoc (grpcio-tools) writes them from the proto, with the pool line changed."""
    from importlib.metadata import version

    from grpc_tools import protoc

    if version("grpcio-tools") != GRPCIO_TOOLS:
        raise RuntimeError(f"grpcio-tools {version('grpcio-tools')} is installed; the stubs are made with "
                           f"{GRPCIO_TOOLS} (pip install grpcio-tools=={GRPCIO_TOOLS}, or the dev extra)")
    with tempfile.TemporaryDirectory() as out:
        args = ["protoc", f"-I{ROOT}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
                str(PROTO.relative_to(ROOT))]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")
        written = Path(out) / HERE.relative_to(ROOT)
        texts = {name: (written / name).read_text(encoding="utf-8") for name in STUBS}
    if texts[STUBS[0]].count(_DEFAULT_POOL) != 1:
        raise RuntimeError("protoc's output no longer has the one default-pool line this script changes")
    texts[STUBS[0]] = texts[STUBS[0]].replace(_DEFAULT_POOL, _OWN_POOL)
    return texts


def main(argv: list[str]) -> int:
    """Write the stubs (or with ``--check`` compare them); the exit status."""
    texts = generate()
    if "--check" in argv:
        stale = [name for name, text in texts.items() if (HERE / name).read_text(encoding="utf-8") != text]
        if stale:
            print(f"stale: {', '.join(stale)}; run python -m sk_deploy.service.grpc_v2.generate", file=sys.stderr)
        return 1 if stale else 0
    for name, text in texts.items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
