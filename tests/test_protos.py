"""The function's own Datastore messages: current, the same wire format as Google's client, and
light enough that a cold start never loads Google's client library."""

from __future__ import annotations

import json
import subprocess
import sys

from google.cloud import datastore_v1 as google_ds

from conftest import ROOT
from counter import protos as ds
from scripts import protos as refresh

HEAVY_MODULES = (
    "google.api_core",
    "google.cloud.datastore",
    "google.cloud.datastore_v1",
    "proto",
    "requests",
    "cryptography",
    "google.auth.compute_engine",
)
"""What Google's client library loads before its first call; none of it is needed to count."""


def test_the_schema_is_the_one_the_pinned_client_library_describes() -> None:
    assert refresh.main(["--check"]) == 0


def test_a_counting_commit_is_byte_for_byte_what_googles_client_sends() -> None:
    def commit(m):  # the same request, built with either set of classes
        key = m.Key(
            partition_id=m.PartitionId(project_id="p", database_id="db", namespace_id="ns"),
            path=[m.Key.PathElement(kind="PageCount", name="/blog/")],
        )
        when = {"seconds": 1_800_000_000, "nanos": 123_000}
        return m.CommitRequest(
            project_id="p",
            database_id="db",
            mode=m.CommitRequest.Mode.TRANSACTIONAL,
            single_use_transaction=m.TransactionOptions(
                read_write=m.TransactionOptions.ReadWrite()
            ),
            mutations=[
                m.Mutation(
                    upsert=m.Entity(key=key),
                    property_mask=m.PropertyMask(paths=[]),
                    property_transforms=[
                        m.PropertyTransform(property="count", increment=m.Value(integer_value=1))
                    ],
                ),
                m.Mutation(
                    insert=m.Entity(
                        key=key,
                        properties={
                            "expire_at": m.Value(
                                timestamp_value=when if m is ds else _datetime(when),
                                exclude_from_indexes=True,
                            ),
                            "salt": m.Value(blob_value=b"\x00\xff"),
                        },
                    )
                ),
            ],
        )

    ours = commit(ds).SerializeToString(deterministic=True)
    theirs = google_ds.CommitRequest.pb(commit(google_ds)).SerializeToString(deterministic=True)
    assert ours == theirs
    assert b"PageCount" in ours


def test_a_response_from_googles_classes_reads_the_same_in_ours() -> None:
    response = google_ds.CommitResponse(
        mutation_results=[
            google_ds.MutationResult(transform_results=[google_ds.Value(integer_value=42)])
        ],
        index_updates=3,
    )
    ours = ds.CommitResponse.FromString(google_ds.CommitResponse.serialize(response))
    assert ours.mutation_results[0].transform_results[0].integer_value == 42
    assert ours.index_updates == 3


def test_importing_the_function_loads_no_part_of_googles_client_library() -> None:
    probe = (
        "import json, sys, main\n"
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


def _datetime(when: dict) -> object:
    import datetime

    moment = datetime.datetime.fromtimestamp(when["seconds"], datetime.UTC)
    return moment.replace(microsecond=when["nanos"] // 1000)
