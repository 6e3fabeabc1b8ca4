"""Regenerate the Python code for ``grpc_predict_v2.proto`` (needs ``grpcio-tools``).

    python -m edgert.serve.proto.generate            # rewrite grpc_predict_v2_pb2*.py
    python -m edgert.serve.proto.generate --check    # exit 1 if the committed code is stale

Two edits are made to what protoc writes:

* the messages are registered in a descriptor pool of their own instead of protobuf's default
  one: the protocol's package is ``inference``, and a client library for the same protocol
  (tritonclient, KServe's, MLServer's) registers the same names from its own ``.proto`` in the
  default pool; sharing it would make importing both in one process fail;
* the service module imports the message module relative to its package;
* a ``# ruff: noqa`` line on top (generated code is not linted).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
PROTO = "grpc_predict_v2.proto"
OUTPUTS = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2_grpc.py")
_NOQA = "# ruff: noqa\n"  # generated code: not linted


def generate(out_dir: pathlib.Path) -> None:
    from grpc_tools import protoc

    args = ["grpc_tools.protoc", f"-I{HERE}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}", str(HERE / PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pb2 = out_dir / OUTPUTS[0]
    text = pb2.read_text()
    old = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
    assert old in text, "protoc's output changed: update edgert/serve/proto/generate.py"
    text = text.replace(old, "_POOL = _descriptor_pool.DescriptorPool()  # edgert: a private "
                             "pool (see generate.py)\nDESCRIPTOR = _POOL.AddSerializedFile(")
    pb2.write_text(_NOQA + text)
    grpc_mod = out_dir / OUTPUTS[1]
    text = grpc_mod.read_text()
    old = "import grpc_predict_v2_pb2 as grpc__predict__v2__pb2"
    assert old in text, "grpc_tools' output changed: update edgert/serve/proto/generate.py"
    grpc_mod.write_text(_NOQA + text.replace(old, "from . import grpc_predict_v2_pb2 as "
                                                  "grpc__predict__v2__pb2"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with the committed files instead of writing them")
    args = ap.parse_args(argv)
    if not args.check:
        generate(HERE)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(pathlib.Path(tmp))
        stale = [n for n in OUTPUTS
                 if (pathlib.Path(tmp) / n).read_text() != (HERE / n).read_text()]
    if stale:
        print(f"stale generated code: {', '.join(stale)}; run python -m "
              "edgert.serve.proto.generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
