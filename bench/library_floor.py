"""The library floor: functions-framework and datastore_v1's GAPIC client, one Commit per POST.

The least a counter built on google-cloud-datastore's increment transform can do: no settings,
checks, retries or logs, only a Commit of the mutation the product uses for a page's total
(an upsert with an empty property mask and an increment transform). Its client is
built on the first request, as counter/datastore.py builds it for the emulator (that module's
channel options tune reconnects and message limits, not the work of a call). A file of its
own, so that its start imports nothing but what it uses. Served by the benchmark only.
"""

from __future__ import annotations

import os
import threading

import flask
import functions_framework
import grpc
from google.cloud import datastore_v1
from google.cloud.datastore_v1.services.datastore.transports import DatastoreGrpcTransport

_client: datastore_v1.DatastoreClient | None = None
_lock = threading.Lock()


def client() -> datastore_v1.DatastoreClient:
    """One GAPIC client per process on the emulator, made on the first request."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                channel = grpc.insecure_channel(os.environ["DATASTORE_EMULATOR_HOST"])
                _client = datastore_v1.DatastoreClient(
                    transport=DatastoreGrpcTransport(channel=channel)
                )
    return _client


@functions_framework.http
def library_floor(request: flask.Request) -> tuple[dict, int]:
    """Add one to the page's count with an increment transform; answer the new count."""
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    key = datastore_v1.Key(
        partition_id=datastore_v1.PartitionId(project_id=project),
        path=[datastore_v1.Key.PathElement(kind="PageCount", name=request.args.get("page", "/"))],
    )
    mutation = datastore_v1.Mutation(
        upsert=datastore_v1.Entity(key=key),
        property_mask=datastore_v1.PropertyMask(),  # empty: keep the entity's other properties
        property_transforms=[
            datastore_v1.PropertyTransform(
                property="count", increment=datastore_v1.Value(integer_value=1)
            )
        ],
    )
    response = client().commit(
        request=datastore_v1.CommitRequest(
            project_id=project,
            mode=datastore_v1.CommitRequest.Mode.NON_TRANSACTIONAL,
            mutations=[mutation],
        )
    )
    return {"count": response.mutation_results[0].transform_results[0].integer_value}, 200
