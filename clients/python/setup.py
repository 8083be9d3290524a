"""Build hook of chat-memory-client: generates the gRPC stubs from proto/.

The metadata lives in pyproject.toml; this file only adds what needs code:

- ``build_py`` runs grpcio-tools' protoc on ``chatmemory/v1/memory.proto`` and
  writes ``chat_memory/_gen/`` into the build (never into git);
- ``sdist`` copies the proto file into the source archive, since from the
  repository it is found at ``../../proto`` (outside this directory);
- the runtime dependencies get lower bounds for ``grpcio`` and ``protobuf`` equal
  to the versions the stubs were generated for: both libraries refuse to load
  stubs newer than themselves, and which ones grpcio-tools makes is only known
  here.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist

HERE = Path(__file__).resolve().parent
PROTO = Path("chatmemory") / "v1" / "memory.proto"
# The sdist carries its own copy; a repository checkout has the real one two levels up.
PROTO_ROOTS = [HERE / "proto", HERE.parent.parent / "proto"]


def proto_root() -> Path:
    for root in PROTO_ROOTS:
        if (root / PROTO).is_file():
            return root
    searched = ", ".join(str(r / PROTO) for r in PROTO_ROOTS)
    raise SystemExit(f"chat-memory-client: {PROTO} not found (looked at {searched})")


def generate(package_dir: Path) -> Path:
    """Writes the stubs into ``package_dir/_gen`` and returns that directory."""
    import grpc_tools
    from grpc_tools import protoc

    out = package_dir / "_gen"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root()}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"chat-memory-client: protoc failed on {PROTO}")
    for d in (out, out / "chatmemory", out / "chatmemory" / "v1"):
        (d / "__init__.py").touch()
    # protoc writes absolute imports rooted at the proto path; the stubs live
    # inside this package instead.
    grpc_stub = out / "chatmemory" / "v1" / "memory_pb2_grpc.py"
    text = grpc_stub.read_text(encoding="utf-8")
    text = text.replace("from chatmemory.v1 import", "from chat_memory._gen.chatmemory.v1 import")
    grpc_stub.write_text(text, encoding="utf-8")
    return out


def generated_versions() -> tuple[str, str]:
    """(grpcio, protobuf) versions the generated stubs require at least."""
    with tempfile.TemporaryDirectory() as tmp:
        out = generate(Path(tmp))
        grpc_text = (out / "chatmemory" / "v1" / "memory_pb2_grpc.py").read_text(encoding="utf-8")
        pb_text = (out / "chatmemory" / "v1" / "memory_pb2.py").read_text(encoding="utf-8")
    grpc_match = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", grpc_text)
    pb_match = re.search(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),",
        pb_text,
    )
    if grpc_match:
        grpc_min = grpc_match.group(1)
    else:  # older grpcio-tools emit no check
        from grpc_tools import grpc_version

        grpc_min = grpc_version.VERSION
    if pb_match:
        pb_min = ".".join(pb_match.groups())
    else:  # older protoc emit no check: the build environment's runtime is known good
        import google.protobuf

        pb_min = google.protobuf.__version__
    return grpc_min, pb_min


class build_py(_build_py):
    """Copies the sources, then generates the stubs beside them."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            generate(HERE / "src" / "chat_memory")
        else:
            generate(Path(self.build_lib) / "chat_memory")


class sdist(_sdist):
    """Puts the proto file into the archive, so it builds away from the repository."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        target = Path(base_dir) / "proto" / PROTO
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto_root() / PROTO, target)


def dependencies() -> list[str]:
    grpc_min, pb_min = generated_versions()
    pb_major = int(pb_min.split(".")[0])
    return [
        f"grpcio>={grpc_min}",
        f"protobuf>={pb_min},<{pb_major + 1}",
        # google.rpc.Status, RetryInfo and BadRequest (the gateway's error details).
        "googleapis-common-protos>=1.56",
    ]


setup(
    install_requires=dependencies(),
    cmdclass={"build_py": build_py, "sdist": sdist},
)
