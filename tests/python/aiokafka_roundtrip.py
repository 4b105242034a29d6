"""aiokafka (asyncio client, its own protocol implementation) against a standalone broker:
creates a topic, produces with acks=all and gzip, then two members of one consumer group
split the partitions, consume everything exactly once and commit; a restarted member resumes
from the committed offsets. Exits non-zero on any mismatch.

Usage: aiokafka_roundtrip.py BOOTSTRAP"""
import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

bootstrap = sys.argv[1]
topic = "aiokafka-topic"
group = "aiokafka-group"
partitions = 4
n = 2000


def value(i):
    return b"v%d-" % i + b"y" * (i % 250)


async def consume_until(consumers, want, timeout_s):
    seen = {}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(seen) < want and asyncio.get_running_loop().time() < deadline:
        for c in consumers:
            batches = await c.getmany(timeout_ms=200)
            for tp, msgs in batches.items():
                for m in msgs:
                    i = int(m.key[1:])
                    assert m.value == value(i), "message %d has a different value" % i
                    assert i not in seen, "message %d consumed twice" % i
                    seen[i] = (tp.partition, m.offset)
    return seen


async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip", linger_ms=5)
    await producer.start()
    # send() enqueues in call order and returns a future for the acknowledgement.
    futures = [
        await producer.send(topic, key=b"k%d" % i, value=value(i), partition=i % partitions) for i in range(n)
    ]
    sent = await asyncio.gather(*futures)
    await producer.stop()
    for i, md in enumerate(sent):
        assert md.partition == i % partitions and md.offset == i // partitions, (i, md)

    members = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        for _ in range(2)
    ]
    for m in members:
        await m.start()
    # Both members joined: the partitions are split between them.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        for m in members:
            await m.getmany(timeout_ms=50, max_records=1)
        owned = [sorted(tp.partition for tp in m.assignment()) for m in members]
        if all(owned) and sorted(sum(owned, [])) == list(range(partitions)):
            break
    assert all(owned) and sorted(sum(owned, [])) == list(range(partitions)), owned
    for m in members:
        for tp in m.assignment():
            m.seek(tp, 0)
    seen = await consume_until(members, n, 60)
    assert len(seen) == n, "consumed %d of %d" % (len(seen), n)
    for m in members:
        await m.commit()
        await m.stop()

    # A new member of the group starts from the committed offsets: nothing left to read.
    again = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await again.start()
    leftover = await consume_until([again], 1, 5)
    committed = {p: await again.committed(TopicPartition(topic, p)) for p in range(partitions)}
    await again.stop()
    assert not leftover, "re-read after commit: %r" % list(leftover)[:5]
    assert committed == {p: n // partitions for p in range(partitions)}, committed
    print("aiokafka roundtrip ok: %d messages, owned %s, committed %s" % (n, owned, committed))


asyncio.run(main())
