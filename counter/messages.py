"""google-cloud-datastore's Datastore v1 messages, as the plain protobuf classes they wrap.

The library's proto-plus types convert every field on access; the counter builds and reads its
few messages as the protobuf classes underneath (`Type.pb()`), as the library's own high-level
client does, and counter/datastore.py wraps them for its GAPIC client.
"""

from __future__ import annotations

from google.cloud.datastore_v1 import types
from google.protobuf import timestamp_pb2

PartitionId = types.PartitionId.pb()
Key = types.Key.pb()
Value = types.Value.pb()
Entity = types.Entity.pb()
Mutation = types.Mutation.pb()
PropertyMask = types.PropertyMask.pb()
PropertyTransform = types.PropertyTransform.pb()
Query = types.Query.pb()
KindExpression = types.KindExpression.pb()
PropertyReference = types.PropertyReference.pb()
Filter = types.Filter.pb()
PropertyFilter = types.PropertyFilter.pb()
CompositeFilter = types.CompositeFilter.pb()
QueryResultBatch = types.QueryResultBatch.pb()
LookupRequest = types.LookupRequest.pb()
CommitRequest = types.CommitRequest.pb()
CommitResponse = types.CommitResponse.pb()
RunQueryRequest = types.RunQueryRequest.pb()
BeginTransactionRequest = types.BeginTransactionRequest.pb()
RollbackRequest = types.RollbackRequest.pb()
Timestamp = timestamp_pb2.Timestamp
