#!/usr/bin/env bash
# Ad-hoc script used for the trace in README.md (paths as on the measuring machine).
# ad-hoc: persistent cold data, loaded run with sampling. usage: exp.sh DATA_DIR NAME [broker args...]
set -u
DATA=$1; NAME=$2; shift 2
R=/work/main/target/release
OUT=/tmp/exp/$NAME; rm -rf $OUT; mkdir -p $OUT
PORT=19092; MPORT=19093
$R/shardlog --listen 127.0.0.1:$PORT --data-dir $DATA --shards 2 --set metrics.listen=127.0.0.1:$MPORT "$@" >$OUT/broker.log 2>&1 &
BP=$!
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
if [ ! -f $DATA/.filled ]; then
  $R/shardlog-bench produce --bootstrap 127.0.0.1:$PORT --topic cold --partitions 4 --record-size 1KiB --messages 6000000 --acks 1 --quiet --out $OUT --name fill >/dev/null
  $R/shardlog-bench produce --bootstrap 127.0.0.1:$PORT --topic hot --partitions 4 --record-size 1KiB --messages 1000 --acks 1 --quiet --out $OUT --name hot >/dev/null
  touch $DATA/.filled
fi
sync; echo 3 > /proc/sys/vm/drop_caches
curl -s 127.0.0.1:$MPORT/metrics > $OUT/m0
chrt --idle 0 $R/shardlog-bench consume --bootstrap 127.0.0.1:$PORT --topic cold --from earliest --messages 6000000 --quiet --out $OUT --name reader > $OUT/reader.txt &
CP=$!
sleep 1
(sleep 1; perf sched record -o $OUT/sched.data -- sleep 10 >/dev/null 2>&1) &
(sleep 8; top -H -b -d 2 -n 3 > $OUT/top.txt) &
$R/shardlog-bench produce --bootstrap 127.0.0.1:$PORT --topic hot --record-size 1KiB --rate 20000 --linger 0 --acks 1 --duration 12s --warmup 2s --quiet --out $OUT --name loaded > $OUT/loaded.txt
curl -s 127.0.0.1:$MPORT/metrics > $OUT/m1
kill $CP 2>/dev/null; wait $CP 2>/dev/null
kill -TERM $BP; wait $BP
python3 - $OUT <<'PY'
import json,sys
o=sys.argv[1]
l=json.load(open(o+"/loaded.json"))["produce"]["ack_latency_ms"]
print("loaded p50 %s p99 %s max %s"%(l["p50"],l["p99"],l["max"]))
def h(f):
  d={}
  for line in open(f):
    if line.startswith('shardlog_request_duration_seconds_bucket{api="Produce"'):
      le=line.split('le="')[1].split('"')[0]; d[le]=d.get(le,0)+float(line.rsplit(' ',1)[1])
  return d
a,b=h(o+"/m0"),h(o+"/m1")
tot=b.get("+Inf",0)-a.get("+Inf",0)
print("broker Produce requests",tot, " cumulative share by le:", {k: round((b[k]-a.get(k,0))/tot,3) for k in b if tot})
PY
