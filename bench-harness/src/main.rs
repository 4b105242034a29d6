//! `shardlog-bench`: a load generator that speaks the Kafka protocol itself, so it can drive
//! any Kafka-compatible broker (Shardlog, Kafka, Redpanda, Tansu) with the same workload.
//!
//! A guided tour, in the order a run uses them:
//! - `cli`: parameters, units, validation, help text (bad input exits with status 2).
//! - `run`: set-up (topic, payload pool, consumers positioned first), producers, the sampler
//!   loop that builds the time series and decides when to stop.
//! - `payload`: pre-built batch templates patched per send; nothing is allocated per record.
//! - `schedule`: the shared epoch clock and open-loop intended send times (coordinated omission).
//! - `produce`: writer and reader thread per connection, pipelined up to `--max-in-flight`.
//! - `consume`, `group`, `records`: fetching, classic consumer groups, reading send stamps.
//! - `commit`: the `commit-offsets` mode (OffsetCommit load for one simple group).
//! - `stats`, `report`, `svg`: histograms, table, JSON, plots.
//!
//! Exit status: 0 success, 1 set-up or I/O failure, 2 bad parameters, 3 broker lost mid-run.

mod cli;
mod commit;
mod consume;
mod group;
mod payload;
mod produce;
mod records;
mod report;
mod run;
mod schedule;
mod stats;
mod svg;
mod txn;

use std::process::ExitCode;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardlog-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let options = match command {
        cli::Command::Help => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        cli::Command::Version => {
            println!("shardlog-bench {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        cli::Command::CommitOffsets(o) => return commit_offsets(&o),
        cli::Command::Run(o) => o,
    };
    if !options.quiet {
        eprintln!(
            "shardlog-bench: {} against {}",
            options.describe(),
            options.bootstrap.join(",")
        );
    }
    let outcome = match run::run(&options) {
        Ok(o) => o,
        Err(e) => {
            let text = format!("{e:#}");
            // A socket read timeout surfaces as EAGAIN; say what it means.
            let hint = if text.contains("(os error 11)") || text.contains("timed out") {
                format!(
                    " (no answer within --request-timeout {:?}: the broker accepted the \
                     connection but did not respond)",
                    options.request_timeout
                )
            } else {
                String::new()
            };
            eprintln!("shardlog-bench: {text}{hint}");
            return ExitCode::from(1);
        }
    };
    print!("{}", outcome.table());
    match outcome.write_files() {
        Ok(files) => {
            println!();
            for f in files {
                println!("wrote {}", f.display());
            }
        }
        Err(e) => {
            eprintln!("shardlog-bench: {e:#}");
            return ExitCode::from(1);
        }
    }
    if let Some(f) = &outcome.failure {
        eprintln!("shardlog-bench: the broker went away mid-run: {f}");
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

/// The `commit-offsets` mode: set-up and I/O failures, and error codes mid-run, exit with 1.
fn commit_offsets(o: &cli::CommitOptions) -> ExitCode {
    if !o.quiet {
        eprintln!(
            "shardlog-bench: {} against {}",
            o.describe(),
            o.bootstrap.join(",")
        );
    }
    let outcome = match commit::run(o) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("shardlog-bench: {e:#}");
            return ExitCode::from(1);
        }
    };
    print!("{}", outcome.table());
    match outcome.write_files() {
        Ok(files) => {
            for f in files {
                println!("\nwrote {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardlog-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
