"""PUTs objects to an S3 endpoint, `concurrency` at a time, and reports MB/s as one JSON line.

Reads `key bytes` lines (from `callvault load --plan-only`) on stdin: one object per call, of the
call's audio length, filled with random bytes (incompressible, like callvault's ciphertext).
Used by benches/seaweedfs.rs; run with the bench's venv (boto3).
"""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config


def main() -> None:
    endpoint, bucket, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    objects = [line.split() for line in sys.stdin if line.strip()]
    config = Config(
        max_pool_connections=concurrency,
        retries={"max_attempts": 1},
        s3={"addressing_style": "path"},
        # Checksums only where S3 requires them, as callvault's client sends none of its own.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
        config=config,
    )
    s3.create_bucket(Bucket=bucket)
    # One random buffer, sliced per object at a per-object offset: the bytes differ between
    # objects and generating them costs nothing inside the timed region.
    largest = max(int(size) for _, size in objects)
    noise = os.urandom(largest + 4096)

    def put(item):
        key, size = item[0], int(item[1])
        offset = hash(key) % 4096
        s3.put_object(Bucket=bucket, Key=key, Body=noise[offset : offset + size])
        return size

    started = time.monotonic()
    cpu0 = time.process_time()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        total = sum(pool.map(put, objects))
    wall = time.monotonic() - started
    print(
        json.dumps(
            {
                "objects": len(objects),
                "bytes": total,
                "wall_seconds": wall,
                "mb_per_second": total / 1e6 / wall,
                "client_cpu_seconds": time.process_time() - cpu0,
            }
        )
    )


if __name__ == "__main__":
    main()
