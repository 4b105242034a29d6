//! The simulator in CI: thousands of seeds, each a minute and a half of a faulty cluster's
//! life, must keep every property of `checks`; and a seed replays exactly.
//!
//! `SHARDLOG_SIM_SEEDS` changes how many seeds run (default 2,000, about 20 s here); a failure
//! prints the command that replays its seed with a trace.

use shardlog_sim::{run, Options, Stats};

fn seeds() -> u64 {
    std::env::var("SHARDLOG_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

#[test]
fn every_seed_keeps_every_property() {
    let mut total = Stats::default();
    for seed in 0..seeds() {
        let out = run(&Options::seed(seed));
        if let Some(v) = out.violation {
            panic!("seed {seed}: {v}\nreplay: cargo run -p shardlog-sim -- --seed {seed} --trace");
        }
        total.faults += out.stats.faults;
        total.acked += out.stats.acked;
        total.leader_changes += out.stats.leader_changes;
        total.truncations += out.stats.truncations;
        total.assignments += out.stats.assignments;
        total.commits_acked += out.stats.commits_acked;
    }
    // The seeds did exercise what the checks are about.
    let n = seeds();
    assert!(total.faults >= 4 * n, "{total:?}");
    assert!(total.acked >= 100 * n, "{total:?}");
    assert!(total.leader_changes >= 2 * n, "{total:?}");
    assert!(total.truncations > n / 10, "{total:?}");
    assert!(total.assignments >= 6 * n, "{total:?}");
    assert!(total.commits_acked >= 20 * n, "{total:?}");
}

#[test]
fn a_seed_replays_exactly() {
    let traced = |seed| {
        run(&Options {
            trace: true,
            ..Options::seed(seed)
        })
    };
    let (a, b) = (traced(42), traced(42));
    assert!(a.trace.len() > 100, "{}", a.trace.len());
    assert_eq!(a.trace, b.trace);
    assert_eq!(format!("{:?}", a.stats), format!("{:?}", b.stats));
    assert_ne!(a.trace, traced(43).trace);
}
