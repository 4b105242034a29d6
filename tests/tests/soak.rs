//! The short soak: the same program as `cargo soak` (`shardlog_tests::soak`), one round of
//! every event type (kill -9, SIGTERM, a leader SIGSTOPped past its session, ZooKeeper paused,
//! a leader cut off by a network partition, an idle window, and the preferred-leader rebalances
//! after each) with a 6 s session timeout, about 2 minutes. It needs root for its network
//! namespaces (CI and the development machine run as root).

use std::time::Duration;

use shardlog_tests::soak::{run, Options};

#[test]
fn soak_short_run_passes() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the soak creates network namespaces and needs root (run the tests as root)"
    );
    let opts = Options {
        // One round always runs to its end, whatever the duration; a round takes ~2 minutes.
        duration: Duration::from_secs(1),
        session_timeout_ms: 6000,
        partitions: 300,
        offsets_partitions: 50,
        rate: 1000,
        idle: Duration::from_secs(20),
        out: shardlog_tests::workspace_root().join("target/soak/short-run"),
    };
    let outcome = run(&opts);
    println!("{}", outcome.summary);
    assert!(
        outcome.passed(),
        "the soak failed ({} problems; results and logs in {}):\n{}",
        outcome.failures.len(),
        outcome.out_dir.display(),
        outcome.failures.join("\n")
    );
}
