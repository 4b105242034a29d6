"""aiokafka's transactional producer against Shardlog: a committed and an aborted
transaction; a read_committed consumer sees the committed records only. Exits non-zero on any
mismatch."""
import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

bootstrap = sys.argv[1]
topic = "aiokafka-txn"


async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="aiokafka-txn-id")
    await producer.start()
    committed, aborted = set(), set()
    try:
        for i in range(6):
            values = [b"t%d-r%d" % (i, j) for j in range(4)]
            if i % 2 == 1:
                try:
                    async with producer.transaction():
                        for j, v in enumerate(values):
                            await producer.send_and_wait(topic, value=v, partition=j % 2)
                        raise RuntimeError("abort this one")
                except RuntimeError:
                    aborted.update(values)
            else:
                async with producer.transaction():
                    for j, v in enumerate(values):
                        await producer.send_and_wait(topic, value=v, partition=j % 2)
                committed.update(values)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen = set()
        end = await consumer.end_offsets(parts)
        async def behind():
            for tp in parts:
                if await consumer.position(tp) < end[tp]:
                    return True
            return False

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000)
            for msgs in batch.values():
                seen.update(m.value for m in msgs)
    finally:
        await consumer.stop()
    assert seen == committed, "read_committed saw %r, expected %r" % (sorted(seen), sorted(committed))
    print("aiokafka transactions ok: %d committed, %d aborted" % (len(committed), len(aborted)))


asyncio.run(main())
