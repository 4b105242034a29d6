"""kafka-python's transactional producer against Shardlog: committed and aborted transactions
over two partitions; a read_committed consumer sees the committed records only, a
read_uncommitted one sees all of them. Exits non-zero on any mismatch."""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap = sys.argv[1]
topic = "kafka-python-txn"

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])

producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kafka-python-txn-id")
producer.init_transactions()
committed, aborted = set(), set()
for i in range(10):
    producer.begin_transaction()
    values = [b"t%d-r%d" % (i, j) for j in range(6)]
    for j, v in enumerate(values):
        producer.send(topic, value=v, partition=j % 2)
    if i % 4 == 2:
        # Sent first, so the aborted records are in the log (an abort drops unsent ones).
        producer.flush()
        producer.abort_transaction()
        aborted.update(values)
    else:
        producer.commit_transaction()
        committed.update(values)
producer.close()


def read(isolation):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level=isolation,
        consumer_timeout_ms=5000,
    )
    parts = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    seen = set(m.value for m in consumer)
    end = consumer.end_offsets(parts)
    consumer.close()
    return seen, end


seen, end_rc = read("read_committed")
assert seen == committed, "read_committed saw %r, expected %r" % (sorted(seen), sorted(committed))
seen, end_ru = read("read_uncommitted")
assert seen == committed | aborted, "read_uncommitted saw %r" % sorted(seen)
# Every transaction ends with a marker on both partitions: 10 markers and 30 records each.
for tp, off in end_ru.items():
    assert off == 40, "end offset of %s is %d, expected 40" % (tp, off)
print("kafka-python transactions ok: %d committed, %d aborted" % (len(committed), len(aborted)))
