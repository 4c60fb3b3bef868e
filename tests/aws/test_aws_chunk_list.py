"""Chunk lists in S3, in the shape a Distributed Map ItemReader (InputType JSON) reads."""

from __future__ import annotations

import json

import boto3

from tokenmigration.aws.chunk_list import read_chunks, write_chunks
from tokenmigration.engine.results import Chunk


def test_round_trip_and_shape():
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="chunks")
    chunks = [Chunk(n, n * 2000 + 1, n * 2000 + 2000, 2000) for n in range(5000)]  # 10 million users
    location = write_chunks(s3, "chunks", "migration-1", chunks)
    assert location == {"Bucket": "chunks", "Key": "runs/migration-1/chunks.json"}
    stored = s3.get_object(**location)
    assert stored["ContentType"] == "application/json"
    items = json.loads(stored["Body"].read())
    assert isinstance(items, list) and items[1] == {"number": 1, "lo": 2001, "hi": 4000, "users": 2000}
    assert read_chunks(s3, "chunks", "migration-1") == chunks


def test_an_empty_plan_is_an_empty_array():
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="chunks")
    write_chunks(s3, "chunks", "m", [])
    assert read_chunks(s3, "chunks", "m") == []
