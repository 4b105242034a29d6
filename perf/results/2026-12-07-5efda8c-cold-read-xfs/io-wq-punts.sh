#!/usr/bin/env bash
# Ad-hoc script used for the trace in README.md (paths as on the measuring machine).
# produce alone at 20k/s; count io_uring async punts. usage: exp2.sh DATA NAME [broker args]
DATA=$1; NAME=$2; shift 2
R=/work/main/target/release; OUT=/tmp/exp/$NAME; rm -rf $OUT $DATA; mkdir -p $OUT
PORT=19092
$R/shardlog --listen 127.0.0.1:$PORT --data-dir $DATA --shards 2 "$@" >$OUT/broker.log 2>&1 &
BP=$!
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
$R/shardlog-bench produce --bootstrap 127.0.0.1:$PORT --topic hot --partitions 4 --record-size 1KiB --messages 1000 --acks 1 --quiet --out $OUT --name hot >/dev/null
(sleep 3; perf stat -a -e io_uring:io_uring_queue_async_work,io_uring:io_uring_submit_req,io_uring:io_uring_complete -o $OUT/stat.txt sleep 6) &
$R/shardlog-bench produce --bootstrap 127.0.0.1:$PORT --topic hot --record-size 1KiB --rate 20000 --linger 0 --acks 1 --duration 10s --warmup 2s --quiet --out $OUT --name alone > $OUT/alone.txt
kill -TERM $BP; wait $BP
python3 -c "
import json;l=json.load(open('$OUT/alone.json'))['produce']['ack_latency_ms'];print('alone p50',l['p50'],'p99',l['p99'],'max',l['max'])"
grep io_uring $OUT/stat.txt
grep -i "non-blocking" $OUT/broker.log | cut -c1-150
