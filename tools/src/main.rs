//! `shardlog-cli`: one binary to administer a Shardlog broker (or any Kafka-compatible one),
//! produce and consume records, manage consumer groups, and inspect a data directory offline.
//!
//! Tour of the modules:
//! - `cli`: the command line (clap derive), parsing only;
//! - `exit`: exit statuses (2 usage, 3 unreachable, 4 broker error, 5 damage, 6 corrupt
//!   batch fetched) and hints;
//! - `output`, `template`: tables, JSON, the consume format template;
//! - `cluster`, `elect`, `topic`, `produce`, `consume`, `group`, `offsets`, `quota`,
//!   `transactions`: commands that talk to brokers through `shardlog_client` (`elect` is
//!   `cluster elect-leaders`);
//! - `membership`: the classic consumer group protocol, client side (join, sync with a range
//!   assignment, heartbeat, commit, leave);
//! - `segment`: offline `segment dump` and `segment verify` on a data directory;
//! - `codec`: the project's record codec (`shardlog_protocol::records`) with the tool's limits.
//!
//! Data goes to stdout, notes and errors to stderr, so the output can be piped.

mod admin_http;
mod cli;
mod cluster;
mod codec;
mod consume;
mod elect;
mod exit;
mod group;
mod membership;
mod offsets;
mod output;
mod produce;
mod quota;
mod segment;
mod template;
mod topic;
mod transactions;

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shardlog_client::Client;

use crate::cli::{
    Cli, ClusterCommand, Command, GroupCommand, QuotaCommand, SegmentCommand, TopicCommand,
    TransactionsCommand,
};

/// The client id the CLI connects with unless `--client-id` says otherwise.
const DEFAULT_CLIENT_ID: &str = "shardlog-cli";

/// What every broker command needs from the global flags.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub bootstrap: String,
    pub timeout: Duration,
    pub client_id: String,
    /// `--client-id` as given (the quota entity in `quota` commands).
    pub entity_client_id: Option<String>,
    pub json: bool,
}

impl Ctx {
    /// Connects to the cluster through the bootstrap list.
    pub fn connect(&self) -> anyhow::Result<Client> {
        Client::connect(&self.bootstrap, &self.client_id, self.timeout)
            .with_context(|| format!("connecting to {}", self.bootstrap))
    }
}

fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    let ctx = Ctx {
        bootstrap: cli.bootstrap,
        timeout: Duration::from_millis(cli.timeout_ms),
        client_id: match &cli.command {
            // There `--client-id` names the quota entity.
            Command::Quota(_) => DEFAULT_CLIENT_ID.to_string(),
            _ => cli
                .client_id
                .clone()
                .unwrap_or_else(|| DEFAULT_CLIENT_ID.to_string()),
        },
        entity_client_id: cli.client_id.clone(),
        json: cli.json,
    };
    match cli.command {
        Command::Cluster(ClusterCommand::Info) => cluster::info(&ctx, out),
        Command::Cluster(ClusterCommand::ElectLeaders(a)) => elect::run(&ctx, &a, out),
        Command::Topic(cmd) => match cmd {
            TopicCommand::Create(a) => topic::create(&ctx, &a, out),
            TopicCommand::List(a) => topic::list(&ctx, &a, out),
            TopicCommand::Describe(a) => topic::describe(&ctx, &a, out),
            TopicCommand::Delete(a) => topic::delete(&ctx, &a, out),
            TopicCommand::AlterConfig(a) => topic::alter_config(&ctx, &a, out),
            TopicCommand::AddPartitions(a) => topic::add_partitions(&ctx, &a, out),
        },
        Command::Produce(a) => produce::run(&ctx, &a, out),
        Command::Consume(a) => consume::run(&ctx, &a, out),
        Command::Group(cmd) => match cmd {
            GroupCommand::List => group::list(&ctx, out),
            GroupCommand::Describe(a) => group::describe(&ctx, &a, out),
            GroupCommand::Delete(a) => group::delete(&ctx, &a, out),
            GroupCommand::ResetOffsets(a) => group::reset_offsets(&ctx, &a, out),
        },
        Command::Offsets(a) => offsets::run(&ctx, &a, out),
        Command::Quota(cmd) => match cmd {
            QuotaCommand::Describe(a) => quota::describe(&ctx, &a, out),
            QuotaCommand::Set(a) => quota::set(&ctx, &a, out),
            QuotaCommand::Delete(a) => quota::delete(&ctx, &a, out),
        },
        Command::Transactions(cmd) => match cmd {
            TransactionsCommand::List(a) => transactions::list(&ctx, &a, out),
            TransactionsCommand::Describe(a) => transactions::describe(&ctx, &a, out),
            TransactionsCommand::Producers(a) => transactions::producers(&ctx, &a, out),
        },
        Command::Segment(cmd) => match cmd {
            SegmentCommand::Dump(a) => segment::dump(&a.path, a.records, ctx.json, out),
            SegmentCommand::Verify(a) => segment::verify(&a.path, ctx.json, out),
        },
    }
}

/// True when the error is stdout closing under us (`shardlog-cli consume t | head`).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() {
    // clap prints usage errors and exits with status 2 (0 for --help and --version).
    let cli = Cli::parse();
    let bootstrap = cli.bootstrap.clone();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = run(cli, &mut out).and_then(|()| out.flush().map_err(Into::into));
    let status = match result {
        Ok(()) => exit::OK,
        Err(e) if is_broken_pipe(&e) => exit::OK,
        Err(e) => {
            let _ = out.flush();
            eprintln!("error: {e:#}");
            if let Some(hint) = exit::hint(&e, &bootstrap) {
                eprintln!("hint: {hint}");
            }
            exit::status_of(&e)
        }
    };
    std::process::exit(status);
}
