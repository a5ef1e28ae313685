"""Streaming side: records in, scores, alerts and dead letters out, offsets committed.

Following one record from Kafka to its alert enters each module once:
``intake`` (consumed, batched by ``batcher``, decoded by ``records`` and ``formats``, in
a ``decode_process`` child) -> ``worker`` (scored through ``scoring``) -> ``outputs``
(alert and dead-letter messages, payloads from ``alerts``, sizes bounded by ``shorten``)
-> ``publisher`` (produced) -> ``settle`` and ``checkpoint`` (committed, by ``offsets``).

Threads and processes of one worker, and what each owns:

- **worker** (the caller of ``Worker.run``): takes decoded batches from the intake,
  scores them (TensorFlow's own threads run the kernels), builds and produces the
  outputs, and settles: the checkpoint flushes, retries, or runs the transaction, and
  queues offsets with the intake. Publisher, checkpoint and settler are its alone.
- **intake**: the only thread that calls the Kafka consumer. Inside ``consume()``
  librdkafka runs the rebalance callbacks (assign, revoke, lost), ``on_commit``,
  ``stats_cb`` (metrics only) and ``error_cb`` (which may ask the worker to stop).
  Every piece of state those callbacks and the worker share (the assignment, offsets
  to commit and their retry, the batch queue, what is pending, the rewind epoch, the
  group metadata) is guarded by the intake's one lock, ``Intake._cond``; the batcher,
  the held records and the decoding hand-over are the intake thread's own.
- **decode_process children** (``--decode-processes``, two by default): plain
  interpreters that turn a batch's values and headers into arrays; the intake thread
  sends them batches in turn and takes the answers oldest first. A child that dies or
  hangs is replaced and its batch decoded on the intake thread.
- **librdkafka's threads** (per client): network I/O; producer delivery callbacks run
  on the worker's thread, in ``poll``/``flush``.
- **metrics-http**: serves ``/metrics``, ``/healthz`` and ``/readyz`` (a thread per
  connection, a bounded number of them); it only reads metrics and the intake's
  readiness under its lock.
- **txn-call** (exactly-once only): a short-lived thread for a transactional call that
  librdkafka may not return from; the worker waits for it with a timeout.
"""
