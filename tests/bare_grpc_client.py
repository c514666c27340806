"""Datastore as the deployed function reaches it without the GAPIC client: an access token from
the metadata server, then raw RPCs on a grpc TLS channel to datastore.googleapis.com:443.

Run as a process of its own, so gRPC reads the environment it was started with:
  python bare_grpc_client.py --token=metadata|none|TOKEN --namespace=NS OPERATION...
where an OPERATION is `commit:NAME:COUNT` (upsert an entity with that count) or `lookup:NAME`.
It prints one JSON line per step: the token it fetched, then each RPC's status code, details and,
for a Lookup, the counts it found by name.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.request

import grpc
from google.cloud import datastore_v1 as ds

KIND = "StandinProbe"
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
SERVICE = "/google.datastore.v1.Datastore"


def fetch_token() -> str:
    """An access token from the metadata server named by GCE_METADATA_HOST, as on GCE."""
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    request = urllib.request.Request(
        f"http://{host}{TOKEN_PATH}", headers={"Metadata-Flavor": "Google"}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        answer = json.load(reply)
    print(json.dumps({"token": answer["access_token"], "expires_in": answer["expires_in"]}))
    return answer["access_token"]


def channel(token: str | None) -> grpc.Channel:
    """A TLS channel to Datastore's real host name, with the token on every call if given."""
    credentials = grpc.ssl_channel_credentials()
    if token is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    return grpc.secure_channel("datastore.googleapis.com:443", credentials)


def key(project: str, namespace: str, name: str) -> ds.Key:
    """The key of a probe entity."""
    return ds.Key(
        partition_id=ds.PartitionId(project_id=project, namespace_id=namespace),
        path=[ds.Key.PathElement(kind=KIND, name=name)],
    )


def request_for(operation: str, project: str, namespace: str) -> tuple[str, bytes]:
    """The method name and serialized request of one operation."""
    verb, name, *count = operation.split(":")
    if verb == "commit":
        entity = ds.Entity(
            key=key(project, namespace, name),
            properties={"count": ds.Value(integer_value=int(count[0]))},
        )
        request = ds.CommitRequest(
            project_id=project,
            mode=ds.CommitRequest.Mode.NON_TRANSACTIONAL,
            mutations=[ds.Mutation(upsert=entity)],
        )
        return "Commit", ds.CommitRequest.serialize(request)
    lookup = ds.LookupRequest(project_id=project, keys=[key(project, namespace, name)])
    return "Lookup", ds.LookupRequest.serialize(lookup)


def main() -> None:
    """Fetch or take a token, run each operation, print what came back."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("operations", nargs="+")
    args = parser.parse_args()
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    token = {"metadata": None, "none": None}.get(args.token, args.token)
    if args.token == "metadata":
        token = fetch_token()
    # Google routes each call by these, as the GAPIC client sends them.
    metadata = [("x-goog-request-params", f"project_id={project}")]
    with channel(token) as datastore:
        for operation in args.operations:
            method, request = request_for(operation, project, args.namespace)
            result: dict[str, object] = {"method": method}
            try:
                response = datastore.unary_unary(f"{SERVICE}/{method}")(
                    request, metadata=metadata, timeout=10
                )
            except grpc.RpcError as error:
                result |= {"code": error.code().name, "details": error.details()}
            else:
                result["code"] = "OK"
                if method == "Lookup":
                    found = ds.LookupResponse.deserialize(response).found
                    result["found"] = {
                        item.entity.key.path[-1].name: item.entity.properties["count"].integer_value
                        for item in found
                    }
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
