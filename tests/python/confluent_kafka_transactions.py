"""confluent-kafka (Python, librdkafka) transactional producer against Shardlog: commits and
aborts interleaved over two partitions, then a consume-transform-produce round that sends its
offsets to the transaction. read_committed sees the committed records only, read_uncommitted
all of them, and the group's committed offsets are the ones sent with the commit. Exits
non-zero on any mismatch."""
import sys
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1]
topic = "confluent-txn"
out_topic = "confluent-txn-out"

admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics(
    [NewTopic(topic, num_partitions=2), NewTopic(out_topic, num_partitions=2)]
).values():
    f.result(30)

producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "confluent-txn-id"})
producer.init_transactions(30)
committed, aborted = set(), set()
for i in range(8):
    producer.begin_transaction()
    values = [b"t%d-r%d" % (i, j) for j in range(5)]
    for j, v in enumerate(values):
        producer.produce(topic, value=v, partition=j % 2)
    producer.flush(30)
    if i % 3 == 1:
        producer.abort_transaction(30)
        aborted.update(values)
    else:
        producer.commit_transaction(30)
        committed.update(values)


def read(isolation, name):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader-%s" % uuid.uuid4(),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    c.assign([TopicPartition(name, 0, 0), TopicPartition(name, 1, 0)])
    seen, eof = [], set()
    while len(eof) < 2:
        m = c.poll(10)
        if m is None:
            raise SystemExit("%s read of %s stalled: %r" % (isolation, name, seen))
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
                continue
            raise KafkaException(m.error())
        eof.discard(m.partition())
        seen.append(m.value())
    c.close()
    return seen


rc = read("read_committed", topic)
assert set(rc) == committed and len(rc) == len(committed), "read_committed saw %r" % sorted(rc)
ru = read("read_uncommitted", topic)
assert set(ru) == committed | aborted, "read_uncommitted saw %r" % sorted(ru)

# Consume-transform-produce: everything committed above goes to out_topic in one
# transaction, with the consumer's positions.
consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": "confluent-ctp",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    }
)
consumer.subscribe([topic])
got = []
while len(got) < len(committed):
    m = consumer.poll(10)
    if m is None:
        raise SystemExit("the pipeline's consumer stalled after %d records" % len(got))
    if m.error():
        raise KafkaException(m.error())
    got.append(m.value())
producer.begin_transaction()
for v in got:
    producer.produce(out_topic, value=v.upper())
producer.send_offsets_to_transaction(
    consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
)
producer.commit_transaction(30)
positions = {tp.partition: tp.offset for tp in consumer.position(consumer.assignment())}
committed_offsets = {
    tp.partition: tp.offset for tp in consumer.committed(consumer.assignment(), timeout=30)
}
assert committed_offsets == positions, "offsets %r, positions %r" % (committed_offsets, positions)
consumer.close()
out = read("read_committed", out_topic)
assert sorted(out) == sorted(v.upper() for v in committed), "output %r" % sorted(out)
print(
    "confluent-kafka transactions ok: %d committed, %d aborted, %d transformed"
    % (len(committed), len(aborted), len(out))
)
