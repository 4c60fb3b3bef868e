"""The run's chunk list in S3, read by the Distributed Map's ItemReader.

Step Functions caps a state's payload at 256 KiB: 100 million users at 2,000 per chunk are 50,000
chunks, far too many to pass inline. The plan step writes them here and the map reads the object with
``"ItemReader": {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSON"},
"Parameters": {"Bucket.$": ..., "Key.$": ...}}``, fed by what ``write_chunks`` returns.
"""

from __future__ import annotations

import json
from typing import Any

from tokenmigration.engine.results import Chunk


def chunks_key(run_id: str) -> str:
    return f"runs/{run_id}/chunks.json"


def write_chunks(s3_client: Any, bucket: str, run_id: str, chunks: list[Chunk]) -> dict[str, str]:
    """Store ``chunks`` as a JSON array of ``Chunk.to_dict()``; returns the ItemReader's Bucket and Key."""
    key = chunks_key(run_id)
    body = json.dumps([chunk.to_dict() for chunk in chunks], separators=(",", ":")).encode("utf-8")
    s3_client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return {"Bucket": bucket, "Key": key}


def read_chunks(s3_client: Any, bucket: str, run_id: str) -> list[Chunk]:
    body = s3_client.get_object(Bucket=bucket, Key=chunks_key(run_id))["Body"].read()
    return [Chunk.from_dict(item) for item in json.loads(body)]
