//! The runtime never sleeps with work pending (issue 12): a task woken from another thread is
//! always polled, however the shard's thread is descheduled.
//!
//! glommio 0.9.0 could park an executor whose task queues still held runnable tasks: when its
//! preemption timer (500 us here) had already fired before the first queue was picked (the
//! thread descheduled in that window), the loop ran nothing, consumed the timer, found no
//! "woken" source and slept until some unrelated event, possibly forever. Ping-pong with a
//! task that yields every 100 us hit it within about a thousand round trips under load; the
//! fix is in third_party/glommio (see SHARDLOG.md there).

use std::time::{Duration, Instant};

#[test]
fn a_task_woken_from_another_thread_is_always_polled() {
    let (ping_tx, ping_rx) = flume::bounded::<()>(1);
    let (pong_tx, pong_rx) = flume::bounded::<()>(1);
    let shard = std::thread::spawn(move || {
        shardlog_broker::runtime::rt::run_shards(&[0], move |_| {
            let ping_rx = ping_rx.clone();
            let pong_tx = pong_tx.clone();
            async move {
                // The default task queue: wake-ups from other threads do not force an
                // eventfd notification there, so only the executor's own loop can see them.
                while ping_rx.recv_async().await.is_ok() {
                    for _ in 0..30 {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_micros(100) {}
                        shardlog_broker::runtime::rt::yield_if_needed().await;
                    }
                    if pong_tx.send_async(()).await.is_err() {
                        break;
                    }
                }
            }
        })
    });
    let end = Instant::now() + Duration::from_secs(12);
    let mut pings = 0u64;
    let mut worst = Duration::ZERO;
    while Instant::now() < end && pings < 4000 {
        let t = Instant::now();
        ping_tx.send(()).unwrap();
        match pong_rx.recv_timeout(Duration::from_secs(2)) {
            Ok(()) => {}
            Err(_) => panic!("ping {pings} not answered within 2 s: the shard slept with work"),
        }
        worst = worst.max(t.elapsed());
        pings += 1;
    }
    drop(ping_tx);
    shard.join().unwrap().unwrap();
    assert!(pings >= 1000, "only {pings} round trips in 12 s");
    eprintln!("{pings} round trips, slowest {worst:?}");
}
