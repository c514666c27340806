"""Datastore v1 protobuf messages, built from the schema in counter/datastore_schema.py.

Plain protobuf classes (the wire format Google's own client sends), made in a descriptor pool
of their own so they never clash with google-cloud-datastore's where both are loaded. Building
them takes about 1 ms on top of protobuf itself; google-cloud-datastore's client layer took
about 100 ms of imports, most of the first visit's extra time over a bare function.
"""

from __future__ import annotations

import base64

from google.protobuf import (
    descriptor_pool,
    duration_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)

from counter.datastore_schema import FILES

_pool = descriptor_pool.DescriptorPool()
for _well_known in (timestamp_pb2, struct_pb2, wrappers_pb2, duration_pb2):
    _pool.AddSerializedFile(_well_known.DESCRIPTOR.serialized_pb)
for _file in FILES:
    _pool.AddSerializedFile(base64.b64decode("".join(_file)))


def _message(name: str) -> type:
    return message_factory.GetMessageClass(
        _pool.FindMessageTypeByName(f"google.datastore.v1.{name}")
    )


PartitionId = _message("PartitionId")
Key = _message("Key")
Value = _message("Value")
Entity = _message("Entity")
Mutation = _message("Mutation")
PropertyMask = _message("PropertyMask")
PropertyTransform = _message("PropertyTransform")
TransactionOptions = _message("TransactionOptions")
ReadOptions = _message("ReadOptions")
Query = _message("Query")
KindExpression = _message("KindExpression")
PropertyReference = _message("PropertyReference")
Projection = _message("Projection")
Filter = _message("Filter")
PropertyFilter = _message("PropertyFilter")
CompositeFilter = _message("CompositeFilter")
QueryResultBatch = _message("QueryResultBatch")
LookupRequest = _message("LookupRequest")
LookupResponse = _message("LookupResponse")
CommitRequest = _message("CommitRequest")
CommitResponse = _message("CommitResponse")
RunQueryRequest = _message("RunQueryRequest")
RunQueryResponse = _message("RunQueryResponse")
BeginTransactionRequest = _message("BeginTransactionRequest")
BeginTransactionResponse = _message("BeginTransactionResponse")
RollbackRequest = _message("RollbackRequest")
RollbackResponse = _message("RollbackResponse")
Timestamp = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("google.protobuf.Timestamp")
)
