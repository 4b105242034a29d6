"""kafka-python reads a compacted topic from the start, again and again, while the broker's log
cleaner compacts it: every pass must see offsets increasing, only values the producer wrote,
and each key's last value equal to the final one; passes end once a pass sees one record per
key. Exits non-zero on any mismatch.

Usage: kafka_python_compacted.py BOOTSTRAP TOPIC KEYS ROUNDS"""
import sys
import time

from kafka import KafkaConsumer, TopicPartition

bootstrap, topic, keys, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tp = TopicPartition(topic, 0)
final = {b"key-%d" % k: b"value-%d" % (rounds - 1) for k in range(keys)}
deadline = time.time() + 120
passes = 0
while True:
    assert time.time() < deadline, "the topic was not compacted to one record per key in time"
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=5000, max_partition_fetch_bytes=1 << 20)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    end = consumer.end_offsets([tp])[tp]
    last = {}
    count = 0
    previous = -1
    while consumer.position(tp) < end:
        batch = consumer.poll(timeout_ms=5000)
        assert batch or consumer.position(tp) >= end, "stalled at %d of %d" % (consumer.position(tp), end)
        for msg in batch.get(tp, []):
            assert msg.offset > previous, (msg.offset, previous)
            previous = msg.offset
            assert msg.key in final, msg.key
            assert msg.value.startswith(b"value-"), msg.value
            last[msg.key] = msg.value
            count += 1
    consumer.close()
    passes += 1
    assert last == final, "pass %d: last values differ for %d keys" % (
        passes, sum(1 for k in final if last.get(k) != final[k]))
    if count == keys:
        break
    time.sleep(0.5)
print("kafka-python compacted read ok: %d passes" % passes)
