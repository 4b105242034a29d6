//! `cargo soak -- --duration 60m [--session-timeout-ms 18000] [--partitions 300] [--out DIR]`:
//! the cluster soak (see `shardlog_tests::soak`). Prints a summary, writes it with per-event
//! timings and the broker logs to the results directory, and exits 1 when a check failed
//! (2 on bad arguments).

use shardlog_tests::soak::{run, Options};

/// Under `cargo run` (the `cargo soak` alias) and without `SHARDLOG_BIN`, builds the release
/// broker first (a no-op when it is up to date), so the soak never runs a stale binary.
fn build_broker() {
    if std::env::var_os("SHARDLOG_BIN").is_some() {
        return;
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        return;
    };
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "shardlog-broker",
            "--bin",
            "shardlog",
        ])
        .current_dir(shardlog_tests::workspace_root())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("building the broker failed");
        std::process::exit(2);
    }
}

fn main() {
    build_broker();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let outcome = run(&opts);
    println!("\n{}", outcome.summary);
    println!("results and logs in {}", outcome.out_dir.display());
    if !outcome.passed() {
        std::process::exit(1);
    }
}
