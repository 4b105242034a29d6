//! Producer connections: a writer thread that builds and sends batches on schedule, and a
//! reader thread that matches acknowledgements and records latency.
//!
//! The Produce request is encoded by hand around the batch so that nothing but the batch bytes
//! is written per send: [`ProduceEncoder`] reserves room in front of the batch, writes the batch
//! there, and then fills in the frame length, request header and the few body fields that come
//! before the records (it checks itself against `kafka_protocol`'s decoder in the tests).
//! Responses are decoded with the project codec (`shardlog_protocol::request::decode_response`).
//!
//! In-flight requests per connection are bounded by a counting semaphore (`--max-in-flight`);
//! the writer queues what the reader needs (correlation id, record range, send time) on a
//! bounded channel before writing, and Kafka answers requests on one connection in order.

use crate::cli::{Acks, Codec};
use crate::payload::{BatchWriter, PayloadPool};
use crate::run::Shared;
use crate::schedule::Schedule;
use crate::stats::Recorder;
use crate::txn::TxnProducer;
use anyhow::{anyhow, Result};
use bytes::Bytes;
use kafka_protocol::messages::ProduceRequest;
use shardlog_client::error_name;
use shardlog_protocol::request::decode_response;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const PRODUCE_API_KEY: i16 = 0;
/// Produce v9 is the first flexible version (compact strings, tagged fields).
const PRODUCE_FIRST_FLEXIBLE: i16 = 9;

/// Encodes single-partition Produce requests around a batch already in the buffer.
#[derive(Debug, Clone)]
pub struct ProduceEncoder {
    version: i16,
    acks: i16,
    timeout_ms: i32,
    topic: Vec<u8>,
    client_id: Vec<u8>,
    /// The request's `transactional_id` (null when `None`).
    transactional_id: Option<Vec<u8>>,
    /// Bytes kept free in front of the batch for the frame length, header and body prefix.
    reserve: usize,
    /// Reused scratch for the prefix.
    prefix: Vec<u8>,
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl ProduceEncoder {
    pub fn new(version: i16, acks: i16, timeout_ms: i32, topic: &str, client_id: &str) -> Self {
        assert!(
            (3..=12).contains(&version),
            "Produce v{version} is not encodable here"
        );
        let reserve = 64 + topic.len() + client_id.len();
        ProduceEncoder {
            version,
            acks,
            timeout_ms,
            topic: topic.as_bytes().to_vec(),
            client_id: client_id.as_bytes().to_vec(),
            transactional_id: None,
            reserve,
            prefix: Vec::with_capacity(reserve),
        }
    }

    /// Requests of a transactional producer: every request carries `id` as `transactional_id`.
    pub fn with_transactional_id(mut self, id: &str) -> Self {
        self.reserve += id.len() + 2;
        self.prefix = Vec::with_capacity(self.reserve);
        self.transactional_id = Some(id.as_bytes().to_vec());
        self
    }

    /// Empties `buf` and reserves the room for [`ProduceEncoder::finish`]; append the batch next.
    pub fn begin(&self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.resize(self.reserve, 0);
    }

    /// Completes the request whose batch follows the reserved room in `buf`; returns where the
    /// frame starts. Writes nothing but the prefix (into the reserve) and the closing tags.
    pub fn finish(&mut self, buf: &mut Vec<u8>, correlation_id: i32, partition: i32) -> usize {
        let records_len = buf.len() - self.reserve;
        let flexible = self.version >= PRODUCE_FIRST_FLEXIBLE;
        let mut prefix = std::mem::take(&mut self.prefix);
        prefix.clear();
        prefix.extend_from_slice(&[0; 4]); // frame length, patched below
        prefix.extend_from_slice(&PRODUCE_API_KEY.to_be_bytes());
        prefix.extend_from_slice(&self.version.to_be_bytes());
        prefix.extend_from_slice(&correlation_id.to_be_bytes());
        // The header's client id is a classic nullable string even in header v2.
        prefix.extend_from_slice(&(self.client_id.len() as i16).to_be_bytes());
        prefix.extend_from_slice(&self.client_id);
        if flexible {
            prefix.push(0); // header tagged fields
        }
        match (&self.transactional_id, flexible) {
            // Compact nullable string: length + 1, 0 for null.
            (Some(id), true) => {
                put_uvarint(&mut prefix, id.len() as u64 + 1);
                prefix.extend_from_slice(id);
            }
            (None, true) => prefix.push(0),
            (Some(id), false) => {
                prefix.extend_from_slice(&(id.len() as i16).to_be_bytes());
                prefix.extend_from_slice(id);
            }
            (None, false) => prefix.extend_from_slice(&(-1i16).to_be_bytes()),
        }
        prefix.extend_from_slice(&self.acks.to_be_bytes());
        prefix.extend_from_slice(&self.timeout_ms.to_be_bytes());
        if flexible {
            put_uvarint(&mut prefix, 2); // one topic
            put_uvarint(&mut prefix, self.topic.len() as u64 + 1);
            prefix.extend_from_slice(&self.topic);
            put_uvarint(&mut prefix, 2); // one partition
            prefix.extend_from_slice(&partition.to_be_bytes());
            put_uvarint(&mut prefix, records_len as u64 + 1);
        } else {
            prefix.extend_from_slice(&1i32.to_be_bytes());
            prefix.extend_from_slice(&(self.topic.len() as i16).to_be_bytes());
            prefix.extend_from_slice(&self.topic);
            prefix.extend_from_slice(&1i32.to_be_bytes());
            prefix.extend_from_slice(&partition.to_be_bytes());
            prefix.extend_from_slice(&(records_len as i32).to_be_bytes());
        }
        assert!(prefix.len() <= self.reserve);
        if flexible {
            buf.extend_from_slice(&[0, 0, 0]); // partition, topic and request tagged fields
        }
        let start = self.reserve - prefix.len();
        let frame_len = (buf.len() - start - 4) as i32;
        prefix[0..4].copy_from_slice(&frame_len.to_be_bytes());
        buf[start..self.reserve].copy_from_slice(&prefix);
        self.prefix = prefix;
        start
    }
}

/// What the reader needs to account for one request.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    correlation_id: i32,
    first: u64,
    count: u64,
    batch_bytes: u64,
    /// Closed loop: when the batch was built (its records' send time).
    built_ns: u64,
}

/// Counting semaphore bounding requests in flight.
struct Window {
    used: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl Window {
    /// Takes a slot; false when the run is stopping.
    fn acquire(&self, stop: &AtomicBool) -> bool {
        let mut used = self.used.lock().expect("window lock");
        while *used >= self.max {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            used = self
                .freed
                .wait_timeout(used, Duration::from_millis(50))
                .expect("lock")
                .0;
        }
        *used += 1;
        true
    }

    /// Waits until no request is in flight; false when the run is stopping.
    fn wait_idle(&self, stop: &AtomicBool) -> bool {
        let mut used = self.used.lock().expect("window lock");
        while *used > 0 {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            used = self
                .freed
                .wait_timeout(used, Duration::from_millis(50))
                .expect("lock")
                .0;
        }
        true
    }

    fn release(&self) {
        *self.used.lock().expect("window lock") -= 1;
        self.freed.notify_one();
    }
}

/// One producer connection's assignment.
pub struct ProduceTask {
    pub name: String,
    pub addr: String,
    pub version: i16,
    /// Partitions in sending order (cycled).
    pub cycle: Vec<i32>,
    pub cycle_offset: usize,
    /// Records per second on this connection (`None`: unlimited).
    pub rate: Option<f64>,
    /// Records this connection sends at most.
    pub quota: Option<u64>,
    pub recorder: Arc<Recorder>,
    /// `--transactional`: the connection's transactional producer (the writer takes it).
    pub txn: Mutex<Option<TxnProducer>>,
}

/// Per-run producer settings shared by all connections.
pub struct ProduceConfig {
    pub topic: String,
    pub client_id: String,
    pub acks: Acks,
    pub codec: Codec,
    pub max_in_flight: usize,
    pub linger: Duration,
    pub request_timeout: Duration,
    pub pool: Arc<PayloadPool>,
    /// `--transaction-interval-ms` (transactional runs).
    pub transaction_interval: Duration,
}

fn connect(addr: &str, timeout: Duration) -> Result<TcpStream> {
    let mut last = anyhow!("{addr} resolved to no address");
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(timeout))?;
                s.set_read_timeout(Some(timeout))?;
                return Ok(s);
            }
            Err(e) => last = anyhow!("connecting to {addr}: {e}"),
        }
    }
    Err(last)
}

/// Opens the connection and starts its writer and reader threads.
pub fn spawn(
    task: ProduceTask,
    cfg: Arc<ProduceConfig>,
    shared: Arc<Shared>,
) -> Result<Vec<JoinHandle<()>>> {
    let stream = connect(&task.addr, cfg.request_timeout)?;
    let read_half = stream.try_clone()?;
    let window = Arc::new(Window {
        used: Mutex::new(0),
        freed: Condvar::new(),
        max: cfg.max_in_flight,
    });
    let (tx, rx) = sync_channel::<InFlight>(cfg.max_in_flight);
    let writer_done = Arc::new(AtomicBool::new(false));
    let task = Arc::new(task);
    let mut handles = Vec::new();
    {
        let (task, cfg, shared, window, done) = (
            task.clone(),
            cfg.clone(),
            shared.clone(),
            window.clone(),
            writer_done.clone(),
        );
        handles.push(
            std::thread::Builder::new()
                .name(format!("{}-w", task.name))
                .spawn(move || {
                    if let Err(e) = write_loop(&task, &cfg, &shared, stream, &window, tx, &done) {
                        shared.fail_broker(format!("{}: {e:#}", task.addr));
                    }
                })?,
        );
    }
    handles.push(
        std::thread::Builder::new()
            .name(format!("{}-r", task.name))
            .spawn(move || {
                if let Err(e) =
                    read_loop(&task, &cfg, &shared, read_half, &window, rx, &writer_done)
                {
                    shared.fail_broker(format!("{}: {e:#}", task.addr));
                }
            })?,
    );
    Ok(handles)
}

fn write_loop(
    task: &ProduceTask,
    cfg: &ProduceConfig,
    shared: &Shared,
    mut stream: TcpStream,
    window: &Window,
    tx: SyncSender<InFlight>,
    done: &AtomicBool,
) -> Result<()> {
    let clock = &shared.clock;
    let pool = &cfg.pool;
    let times = shared.times();
    let schedule = Schedule::new(
        times.start_ns,
        task.rate,
        cfg.linger,
        pool.records_per_batch,
    );
    let mut encoder = ProduceEncoder::new(
        task.version,
        cfg.acks.wire(),
        cfg.request_timeout.as_millis().min(i32::MAX as u128) as i32,
        &cfg.topic,
        &cfg.client_id,
    );
    let mut txn = task.txn.lock().expect("txn lock").take();
    if let Some(t) = &txn {
        encoder = encoder.with_transactional_id(&t.id);
    }
    let interval_ns = cfg.transaction_interval.as_nanos() as u64;
    // When the open transaction began, and the connection's error count then.
    let mut open: Option<(u64, u64)> = None;
    let mut writer = BatchWriter::new();
    let mut buf: Vec<u8> = Vec::with_capacity(pool.records_per_batch * 2048 + 4096);
    let mut next: u64 = 0;
    let mut cycle_pos = task.cycle_offset;
    let mut template_no = 0usize;
    let mut correlation_id: i32 = 0;
    let result = loop {
        if shared.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if let (Some(t), Some((since, errors))) = (txn.as_mut(), open) {
            if clock.now_ns() >= since + interval_ns {
                open = None;
                if let Err(e) = end_transaction(t, task, shared, window, errors) {
                    break Err(e);
                }
            }
        }
        let mut remaining = task.quota.map_or(u64::MAX, |q| q - next);
        // Open loop: every record intended before the end is sent, the last batch at the end
        // at the latest (its linger may reach past it).
        if let Some(before_end) = schedule.records_before(times.end_ns) {
            remaining = remaining.min(before_end.saturating_sub(next));
        }
        if remaining == 0 {
            break Ok(());
        }
        let now = clock.now_ns();
        let mut batch = schedule.next_batch(next, now, remaining);
        batch.send_at_ns = batch.send_at_ns.min(times.end_ns);
        if !schedule.is_open_loop() && now >= times.end_ns {
            break Ok(());
        }
        if batch.send_at_ns > now && !sleep_until(shared, batch.send_at_ns) {
            break Ok(());
        }
        if cfg.acks != Acks::None && !window.acquire(&shared.stop) {
            break Ok(());
        }
        let built_ns = clock.now_ns();
        if !schedule.is_open_loop() && built_ns >= times.end_ns {
            // The slot just taken carries nothing: give it back, or the last transaction's
            // wait for an idle window never ends.
            if cfg.acks != Acks::None {
                window.release();
            }
            break Ok(());
        }
        if let (Some(t), None) = (txn.as_mut(), open) {
            if let Err(e) = t.begin() {
                break Err(e);
            }
            open = Some((clock.now_ns(), task.recorder.errors.load(Ordering::Relaxed)));
        }
        let partition = task.cycle[cycle_pos % task.cycle.len()];
        cycle_pos += 1;
        let template = pool.template(partition, template_no);
        debug_assert_eq!(template.partition, partition);
        template_no += 1;
        encoder.begin(&mut buf);
        let first = batch.first;
        let stamp = |i: usize| schedule.intended_ns(first + i as u64).unwrap_or(built_ns);
        let producer = txn.as_mut().map(|t| t.stamp(partition, batch.count));
        let batch_bytes =
            writer.write_as(template, batch.count, cfg.codec, stamp, producer, &mut buf)? as u64;
        correlation_id = correlation_id.wrapping_add(1);
        let start = encoder.finish(&mut buf, correlation_id, partition);
        let entry = InFlight {
            correlation_id,
            first,
            count: batch.count as u64,
            batch_bytes,
            built_ns,
        };
        if cfg.acks != Acks::None && tx.send(entry).is_err() {
            break Ok(()); // the reader stopped; it reports why
        }
        if let Err(e) = stream.write_all(&buf[start..]) {
            break Err(anyhow!("sending a produce request failed: {e}"));
        }
        if cfg.acks == Acks::None {
            let t0 = schedule.intended_ns(first).unwrap_or(built_ns);
            task.recorder.count(
                entry.count,
                batch_bytes,
                t0 >= times.measure_start_ns,
                built_ns,
            );
        }
        next += batch.count as u64;
    };
    // The last transaction is committed once its records are acknowledged.
    let result = match (result, txn.as_mut(), open) {
        (Ok(()), Some(t), Some((_, errors))) if !shared.stop.load(Ordering::Relaxed) => {
            end_transaction(t, task, shared, window, errors)
        }
        (result, _, _) => result,
    };
    done.store(true, Ordering::Release);
    drop(tx);
    if cfg.acks == Acks::None {
        // Nothing will answer; wake the reader, which is blocked on the socket.
        let _ = stream.shutdown(Shutdown::Both);
    }
    result
}

/// Ends the open transaction once every produce request of it is acknowledged: commits it, or
/// aborts it when a produce request failed since it began (the connection's error count moved
/// from `errors_at_begin`) and initialises the producer again (new epoch, sequences from 0).
fn end_transaction(
    t: &mut TxnProducer,
    task: &ProduceTask,
    shared: &Shared,
    window: &Window,
    errors_at_begin: u64,
) -> Result<()> {
    if !window.wait_idle(&shared.stop) {
        return Ok(());
    }
    let rec = &task.recorder;
    if rec.errors.load(Ordering::Relaxed) != errors_at_begin {
        t.end(false)?;
        rec.txn_aborts.fetch_add(1, Ordering::Relaxed);
        shared.note_error("transaction aborted after a produce error".to_string());
        return t.reinit();
    }
    let round_trip = t.end(true)?;
    rec.txn_commits.fetch_add(1, Ordering::Relaxed);
    let now = shared.clock.now_ns();
    let measured = now >= shared.times().measure_start_ns;
    rec.commit_latency.lock().expect("latency lock").record(
        round_trip.as_nanos() as u64,
        1,
        measured,
    );
    Ok(())
}

/// Sleeps until `deadline_ns` in slices so a stop is noticed; false if the run is stopping.
fn sleep_until(shared: &Shared, deadline_ns: u64) -> bool {
    const SLICE_NS: u64 = 50_000_000;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = shared.clock.now_ns();
        if now >= deadline_ns {
            return true;
        }
        shared.clock.sleep_until(deadline_ns.min(now + SLICE_NS));
    }
}

fn read_loop(
    task: &ProduceTask,
    cfg: &ProduceConfig,
    shared: &Shared,
    stream: TcpStream,
    window: &Window,
    rx: Receiver<InFlight>,
    writer_done: &AtomicBool,
) -> Result<()> {
    let clock = &shared.clock;
    let times = shared.times();
    let schedule = Schedule::new(
        times.start_ns,
        task.rate,
        cfg.linger,
        cfg.pool.records_per_batch,
    );
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut frame: Vec<u8> = Vec::with_capacity(4096);
    if cfg.acks == Acks::None {
        // acks=0: the broker answers nothing; a read returning means it closed the connection.
        loop {
            let mut b = [0u8; 1];
            match reader.read(&mut b) {
                Ok(0) | Err(_) if writer_done.load(Ordering::Acquire) => return Ok(()),
                Ok(0) => return Err(anyhow!("the broker closed the connection")),
                Ok(_) => return Err(anyhow!("unexpected bytes on an acks=0 connection")),
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(anyhow!("connection failed: {e}")),
            }
        }
    }
    while let Ok(entry) = rx.recv() {
        let mut len = [0u8; 4];
        read_frame_part(&mut reader, &mut len, cfg.request_timeout)?;
        let len = i32::from_be_bytes(len);
        if !(4..=64 << 20).contains(&len) {
            return Err(anyhow!("produce response frame length {len} is invalid"));
        }
        frame.resize(len as usize, 0);
        read_frame_part(&mut reader, &mut frame, cfg.request_timeout)?;
        let now = clock.now_ns();
        let got = i32::from_be_bytes(frame[0..4].try_into().expect("4 bytes"));
        if got != entry.correlation_id {
            return Err(anyhow!(
                "produce response for correlation id {got}, expected {}",
                entry.correlation_id
            ));
        }
        let response =
            decode_response::<ProduceRequest>(Bytes::copy_from_slice(&frame), task.version)
                .map_err(|e| anyhow!(e))?;
        window.release();
        let code = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .map(|p| p.error_code)
            .find(|c| *c != 0)
            .unwrap_or(0);
        let rec = &task.recorder;
        if code != 0 {
            rec.error(code, entry.count);
            shared.note_error(format!("produce: {} ({code})", error_name(code)));
            continue;
        }
        let first_t = schedule.intended_ns(entry.first).unwrap_or(entry.built_ns);
        let measured = first_t >= times.measure_start_ns;
        {
            let mut lat = rec.latency.lock().expect("latency lock");
            if schedule.is_open_loop() {
                for i in entry.first..entry.first + entry.count {
                    let t = schedule.intended_ns(i).expect("open loop");
                    lat.record(now.saturating_sub(t), 1, measured);
                }
            } else {
                lat.record(now.saturating_sub(entry.built_ns), entry.count, measured);
            }
        }
        rec.count(entry.count, entry.batch_bytes, measured, now);
    }
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn read_frame_part(r: &mut impl Read, buf: &mut [u8], timeout: Duration) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if is_timeout(&e) {
            anyhow!("no produce response within {:?} (request timeout)", timeout)
        } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
            anyhow!("the broker closed the connection")
        } else {
            anyhow!("connection failed: {e}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::{Decodable, HeaderVersion};

    #[test]
    fn hand_encoded_produce_decodes_with_the_codec_at_every_version() {
        let batch = shardlog_protocol::batch::build_simple_batch(0, 5, &[(None, Some(b"hello"))]);
        for version in 3..=12i16 {
            let mut enc = ProduceEncoder::new(version, -1, 1500, "bench-topic", "bench-client");
            let mut buf = Vec::new();
            enc.begin(&mut buf);
            buf.extend_from_slice(&batch);
            let start = enc.finish(&mut buf, 77, 3);
            let frame = &buf[start..];
            let len = i32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - 4, "v{version}");
            let mut body = Bytes::copy_from_slice(&frame[4..]);
            let header =
                RequestHeader::decode(&mut body, ProduceRequest::header_version(version)).unwrap();
            assert_eq!(header.request_api_key, 0);
            assert_eq!(header.request_api_version, version);
            assert_eq!(header.correlation_id, 77);
            assert_eq!(header.client_id.as_deref(), Some("bench-client"));
            let req = ProduceRequest::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}: {} bytes left", body.len());
            assert_eq!(req.acks, -1);
            assert_eq!(req.timeout_ms, 1500);
            assert_eq!(req.transactional_id, None);
            assert_eq!(req.topic_data.len(), 1);
            assert_eq!(&*req.topic_data[0].name.0, "bench-topic");
            let p = &req.topic_data[0].partition_data[0];
            assert_eq!(p.index, 3);
            assert_eq!(p.records.as_deref(), Some(&batch[..]));
        }
    }

    #[test]
    fn transactional_produce_carries_its_transactional_id_at_every_version() {
        let batch = shardlog_protocol::batch::build_simple_batch(0, 5, &[(None, Some(b"x"))]);
        for version in 3..=12i16 {
            let mut enc = ProduceEncoder::new(version, -1, 1500, "t", "c")
                .with_transactional_id("shardlog-bench-7-0");
            let mut buf = Vec::new();
            enc.begin(&mut buf);
            buf.extend_from_slice(&batch);
            let start = enc.finish(&mut buf, 5, 2);
            let frame = &buf[start..];
            let len = i32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - 4, "v{version}");
            let mut body = Bytes::copy_from_slice(&frame[4..]);
            RequestHeader::decode(&mut body, ProduceRequest::header_version(version)).unwrap();
            let req = ProduceRequest::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}");
            assert_eq!(
                req.transactional_id.as_ref().map(|t| t.0.to_string()),
                Some("shardlog-bench-7-0".to_string()),
                "v{version}"
            );
            assert_eq!(req.topic_data[0].partition_data[0].index, 2);
            assert_eq!(
                req.topic_data[0].partition_data[0].records.as_deref(),
                Some(&batch[..])
            );
        }
    }

    #[test]
    fn window_bounds_in_flight() {
        let w = Window {
            used: Mutex::new(0),
            freed: Condvar::new(),
            max: 2,
        };
        let stop = AtomicBool::new(false);
        assert!(w.acquire(&stop));
        assert!(w.acquire(&stop));
        stop.store(true, Ordering::Relaxed);
        assert!(!w.acquire(&stop), "a full window gives up when stopping");
        w.release();
        assert!(w.acquire(&stop));
    }
}
