"""A second, independent client: kafka-python (pure Python) produces and consumes through
Shardlog. Exits non-zero on any mismatch."""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap = sys.argv[1]
topic = "kafka-python-topic"
n = 2000

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
assert topic in admin.list_topics(), admin.list_topics()

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip", linger_ms=5)
futures = [producer.send(topic, key=b"k%d" % i, value=b"v%d-" % i + b"z" * (i % 300), partition=i % 2) for i in range(n)]
producer.flush()
offsets = [f.get(timeout=30) for f in futures]
assert all(md.offset == i // 2 for i, md in enumerate(offsets)), "offsets are dense per partition"

consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000)
parts = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
consumer.assign(parts)
consumer.seek_to_beginning(*parts)
seen = {0: [], 1: []}
for msg in consumer:
    seen[msg.partition].append((msg.offset, msg.key, msg.value))
    if sum(len(v) for v in seen.values()) == n:
        break
for p in (0, 1):
    expected = [(j, b"k%d" % (j * 2 + p), b"v%d-" % (j * 2 + p) + b"z" * ((j * 2 + p) % 300)) for j in range(n // 2)]
    assert seen[p] == expected, "partition %d differs" % p
end = consumer.end_offsets(parts)
assert end == {parts[0]: n // 2, parts[1]: n // 2}, end
print("kafka-python roundtrip ok: %d messages" % n)
