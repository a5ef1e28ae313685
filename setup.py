"""Build step: the Open Inference Protocol schema becomes a descriptor set.

``monitor/stream/proto/open_inference.proto`` is compiled by protoc (grpcio-tools, a
build requirement) into ``open_inference.binpb`` beside it, which the package loads at
run time. A descriptor set rather than generated ``_pb2`` modules: it carries no check
against one protobuf runtime version and registers nothing in the global pool.
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTO_DIR = Path(__file__).resolve().parent / "monitor" / "stream" / "proto"


def compile_schema() -> None:
    """Write ``open_inference.binpb`` from ``open_inference.proto``."""
    from grpc_tools import protoc

    args = [
        "protoc",
        f"--proto_path={PROTO_DIR}",
        f"--descriptor_set_out={PROTO_DIR / 'open_inference.binpb'}",
        "open_inference.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc could not compile {PROTO_DIR / 'open_inference.proto'}")


class BuildPyWithSchema(build_py):
    """``build_py`` (also run for editable installs) that compiles the schema first."""

    def run(self) -> None:
        compile_schema()
        super().run()


setup(cmdclass={"build_py": BuildPyWithSchema})
