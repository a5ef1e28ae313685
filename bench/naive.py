"""The loop a user might write first: one message at a time, committed one at a time.

poll one message, ``json.loads``, ``detector.predict`` on one row, produce an alert when
it is flagged, commit that message synchronously. Run on a small sample: it is slow.
"""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
from confluent_kafka import Consumer, Producer

from bench.kafkautil import admin, create_topic
from monitor import load_detector


def naive_rate(
    topic: str, alert_topic: str, detector_dir: str, n: int, seconds: float, bootstrap: str
) -> tuple[float, int]:
    """(records/s, records processed) over at most ``n`` records or ``seconds``."""
    create_topic(admin(bootstrap), alert_topic, 1)
    detector = load_detector(detector_dir)
    detector.predict(np.zeros((1, *detector.input_shape), dtype=np.float32))  # trace once
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-naive-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap})
    consumer.subscribe([topic])
    done = 0
    started = 0.0
    try:
        while done < n:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                if done == 0:
                    continue
                break
            if done == 0:
                started = time.perf_counter()
            record = json.loads(msg.value() or b"")
            x = np.asarray(record["instance"], dtype=np.float32)[None]
            result = detector.predict(x)
            if result["data"]["is_adversarial"][0]:
                alert = {"id": record["id"], "score": float(result["data"]["instance_score"][0])}
                producer.produce(alert_topic, json.dumps(alert).encode())
                producer.poll(0)
            consumer.commit(message=msg, asynchronous=False)
            done += 1
            if time.perf_counter() - started > seconds:
                break
        elapsed = time.perf_counter() - started
        producer.flush(30)
    finally:
        consumer.close()
    return done / elapsed, done
