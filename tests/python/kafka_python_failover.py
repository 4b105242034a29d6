"""kafka-python (a client independent of librdkafka) across a leader failover: an idempotent
acks=all producer keeps sending to a 3-broker cluster while the test (tests/tests/cluster.rs)
kills the partition's leader. Afterwards every acknowledged message must be readable at its
acknowledged offset, in send order, with no duplicates.

Usage: kafka_python_failover.py BOOTSTRAP TOPIC COUNT
Prints `kafka-python failover ok: ...` and exits 0, or fails with an assertion."""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
servers = bootstrap.split(",")


def value(i):
    return b"v%d-" % i + b"x" * (i % 200)


producer = KafkaProducer(
    bootstrap_servers=servers,
    acks="all",
    enable_idempotence=True,
    linger_ms=2,
    retry_backoff_ms=200,
    request_timeout_ms=15000,
    delivery_timeout_ms=90000,
)
futures = []
for i in range(n):
    futures.append(producer.send(topic, key=b"k%d" % i, value=value(i), partition=0))
    time.sleep(0.002)
producer.flush(timeout=120)
acked = {}
failed = []
for i, f in enumerate(futures):
    try:
        acked[i] = f.get(timeout=1).offset
    except Exception as e:  # noqa: BLE001 - reported below
        failed.append((i, repr(e)))
producer.close()
assert not failed, "%d of %d sends failed, first: %s" % (len(failed), n, failed[0])
offsets = [acked[i] for i in range(n)]
assert offsets == sorted(offsets) and len(set(offsets)) == n, "acknowledged offsets not increasing"

tp = TopicPartition(topic, 0)
consumer = KafkaConsumer(
    bootstrap_servers=servers, enable_auto_commit=False, consumer_timeout_ms=20000
)
consumer.assign([tp])
consumer.seek_to_beginning(tp)
end = max(offsets) + 1
read = {}
keys = []
for msg in consumer:
    read[msg.offset] = (msg.key, msg.value)
    keys.append(msg.key)
    if msg.offset + 1 >= end:
        break
consumer.close()
for i, off in acked.items():
    got = read.get(off)
    assert got == (b"k%d" % i, value(i)), "message %d acknowledged at %d, read %r" % (i, off, got)
duplicates = len(keys) - len(set(keys))
assert duplicates == 0, "%d duplicates" % duplicates
print("kafka-python failover ok: %d acknowledged, last offset %d, %d read" % (n, end - 1, len(read)))
