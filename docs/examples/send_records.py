"""Send inputs to the worker's input topic: one JSON record per input row.

A producer to copy into your own code. Each record is ``{"id": ..., "instance": ...}``
where ``instance`` has exactly the shape the detector expects (``distillation-monitor
info`` shows ``input_shape``), as nested lists:

- tabular, input_shape [30]:      {"id": "r-1", "instance": [0.12, -1.3, ...]}
- image, input_shape [28, 28]:    {"id": "r-2", "instance": [[0.0, 0.1, ...], ...]}  (28 x 28)
- image, input_shape [32, 32, 3]: {"id": "r-3", "instance": [[[r, g, b], ...], ...]}

A tabular row is a flat list: ``[[...]]`` would be a 1 x 30 input and is dead-lettered
as the wrong shape. Any other field in the record (here ``source``) is copied into the
alert as context. Reads ``.npy`` files of rows; the bootstrap servers and topic default
to the worker's own variables (``DMON_BOOTSTRAP_SERVERS``, ``DMON_INPUT_TOPIC``).

    python docs/examples/send_records.py my-model/test.npy [more.npy ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message, Producer


def send(producer: Producer, topic: str, name: str, rows: np.ndarray) -> int:
    """Produce one record per row; returns how many were handed to the producer."""
    for i, row in enumerate(rows):
        record = {"id": f"{name}-{i}", "instance": row.tolist(), "source": name}
        value = json.dumps(record).encode()
        while True:
            try:
                producer.produce(topic, key=record["id"].encode(), value=value)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.5)
        producer.poll(0)  # serve delivery reports
    return len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help=".npy files, one input per row")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("DMON_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
    )
    parser.add_argument("--topic", default=os.environ.get("DMON_INPUT_TOPIC", "inference-records"))
    args = parser.parse_args()

    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err)

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap_servers,
            "enable.idempotence": True,  # no duplicates from retries
            "linger.ms": 5,
            "on_delivery": delivered,
        }
    )
    sent: dict[str, Any] = {}
    for path in args.files:
        sent[path.name] = send(producer, args.topic, path.stem, np.load(path))
    unsent = producer.flush(30)
    if unsent or failed:
        print(f"{unsent} records undelivered, {len(failed)} failed: {failed[:1]}", file=sys.stderr)
        return 1
    total = sum(sent.values())
    print(f"sent {total} records to {args.topic} on {args.bootstrap_servers}: {sent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
