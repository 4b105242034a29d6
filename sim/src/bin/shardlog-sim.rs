//! Runs the simulator over seeds.
//!
//! `shardlog-sim [--seeds N] [--from S]` runs seeds S..S+N (default 0..1000) and stops at the
//! first that fails, printing how many ran (with `--all` it runs them all and counts the
//! failures); `shardlog-sim --seed S --trace` replays one seed and prints its events.

use std::process::ExitCode;
use std::time::Instant;

use shardlog_sim::{run, Options};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == name)?;
        match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(v) => Some(v),
            None => {
                eprintln!("{name} needs a number");
                std::process::exit(2);
            }
        }
    };
    let trace = args.iter().any(|a| a == "--trace");
    if let Some(seed) = value("--seed") {
        let out = run(&Options {
            trace,
            ..Options::seed(seed)
        });
        for line in &out.trace {
            println!("{line}");
        }
        println!("seed {seed}: {:?}", out.stats);
        return match out.violation {
            Some(v) => {
                println!("seed {seed} FAILED {v}");
                ExitCode::FAILURE
            }
            None => {
                println!("seed {seed} passed");
                ExitCode::SUCCESS
            }
        };
    }
    let from = value("--from").unwrap_or(0);
    let count = value("--seeds").unwrap_or(1000);
    let all = args.iter().any(|a| a == "--all");
    let started = Instant::now();
    let mut faults = 0;
    let mut failed: Vec<u64> = Vec::new();
    for (n, seed) in (from..from + count).enumerate() {
        let out = run(&Options::seed(seed));
        faults += out.stats.faults;
        if let Some(v) = out.violation {
            if all {
                failed.push(seed);
                continue;
            }
            println!(
                "seed {seed} FAILED after {} seeds ({:.1} s): {v}\nreplay: shardlog-sim --seed {seed} --trace",
                n + 1,
                started.elapsed().as_secs_f64()
            );
            return ExitCode::FAILURE;
        }
    }
    if !failed.is_empty() {
        println!(
            "{} of {count} seeds from {from} failed in {:.1} s; the first: {:?}",
            failed.len(),
            started.elapsed().as_secs_f64(),
            &failed[..failed.len().min(10)]
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{count} seeds from {from} passed ({faults} faults) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
