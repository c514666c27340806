"""Write counter/datastore_schema.py: the Datastore v1 message schema, for counter/protos.py.

    python -m scripts.protos            # rewrite it from the installed google-cloud-datastore
    python -m scripts.protos --check    # exit 1 if it differs from what would be written

The function builds its protobuf messages from these serialized file descriptors instead of
importing google-cloud-datastore, whose client layer costs about 100 ms of the first visit. The
descriptors are taken from the google-cloud-datastore pinned in requirements-dev.txt, so the
messages are exactly the ones that library sends.
"""

from __future__ import annotations

import argparse
import base64
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "counter" / "datastore_schema.py"
WELL_KNOWN = "google/protobuf/"
"""Files protobuf itself ships; counter/protos.py adds them from the runtime."""


def schema_files() -> list[bytes]:
    """The serialized Datastore v1 file descriptors (and their non-protobuf dependencies),
    each after the files it depends on."""
    from google.cloud import datastore_v1
    from google.protobuf import descriptor_pb2

    ordered: dict[str, bytes] = {}

    def add(file) -> None:  # a google.protobuf FileDescriptor
        if file.name in ordered:
            return
        for dependency in sorted(file.dependencies, key=lambda d: d.name):
            add(dependency)
        # The library lists a file's imports in hash order; sorted, the output is the same
        # on every run.
        proto = descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb)
        imports = sorted(proto.dependency)
        del proto.dependency[:]
        proto.dependency.extend(imports)
        ordered[file.name] = proto.SerializeToString(deterministic=True)

    for name in ("CommitRequest", "LookupRequest", "RunQueryRequest", "RollbackRequest"):
        message = getattr(datastore_v1, name)
        add(message.pb().DESCRIPTOR.file)
    return [data for name, data in ordered.items() if not name.startswith(WELL_KNOWN)]


def render(files: list[bytes], version: str) -> str:
    """The module's text."""
    lines = [
        f'"""Datastore v1 message schema from google-cloud-datastore {version}; do not edit.',
        "",
        "Written by `python -m scripts.protos`: serialized file descriptors in base64, each after",
        'the files it depends on, read by counter/protos.py."""',
        "",
        "FILES = (",
    ]
    for data in files:
        text = base64.b64encode(data).decode("ascii")
        lines.append("    (")
        lines += [f'        "{text[i : i + 88]}"' for i in range(0, len(text), 88)]
        lines.append("    ),")
    lines.append(")")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = parser.parse_args(argv)
    text = render(schema_files(), metadata.version("google-cloud-datastore"))
    if args.check:
        if MODULE.read_text(encoding="utf-8") != text:
            print(f"{MODULE.relative_to(ROOT)} is stale: run python -m scripts.protos")
            return 1
        return 0
    MODULE.write_text(text, encoding="utf-8")
    print(f"wrote {MODULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
