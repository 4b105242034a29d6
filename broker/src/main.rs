//! `shardlog`: start a broker. Standalone by default: `shardlog` alone listens on
//! 127.0.0.1:9092 and stores under ./data. With `--zookeeper host:port` (or
//! `zookeeper.connect`) it joins a cluster coordinated by ZooKeeper.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shardlog_broker::config::BrokerConfig;
use shardlog_broker::startup;

/// Shardlog: a Kafka-compatible, thread-per-core message broker.
#[derive(Parser, Debug)]
#[command(name = "shardlog", version)]
struct Args {
    /// Address to listen on (Kafka: listeners).
    #[arg(long)]
    listen: Option<String>,
    /// host:port given to clients in Metadata (Kafka: advertised.listeners). Defaults to --listen.
    #[arg(long)]
    advertised_listener: Option<String>,
    /// Data directory (Kafka: log.dirs).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of shards (executors, one per core). Default: every core this process may use.
    #[arg(long)]
    shards: Option<usize>,
    /// Broker id (Kafka: broker.id).
    #[arg(long)]
    broker_id: Option<i32>,
    /// A Kafka-style properties file (key=value lines with Kafka's names).
    #[arg(long)]
    config: Option<PathBuf>,
    /// One Kafka-named setting, e.g. --set log.segment.bytes=1048576 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// ZooKeeper connect string for cluster mode (host:port[,host:port]).
    #[arg(long)]
    zookeeper: Option<String>,
}

fn build_config(args: &Args) -> Result<BrokerConfig, String> {
    let mut c = BrokerConfig::default();
    if let Some(path) = &args.config {
        c.load_properties(path).map_err(|e| e.to_string())?;
    }
    for s in &args.settings {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("--set {s:?}: expected KEY=VALUE"))?;
        c.set(k.trim(), v.trim()).map_err(|e| e.to_string())?;
    }
    if let Some(l) = &args.listen {
        c.set("listeners", l).map_err(|e| e.to_string())?;
    }
    match &args.advertised_listener {
        Some(a) => c
            .set("advertised.listeners", a)
            .map_err(|e| e.to_string())?,
        None if !c.explicit.contains_key("advertised.listeners") => {
            c.advertised_host = c.listen.ip().to_string();
            c.advertised_port = c.listen.port();
        }
        None => {}
    }
    if let Some(d) = &args.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(n) = args.shards {
        if n == 0 {
            return Err("--shards must be at least 1".into());
        }
        c.shards = n;
    }
    if let Some(id) = args.broker_id {
        c.broker_id = id;
    }
    if let Some(zk) = &args.zookeeper {
        c.set("zookeeper.connect", zk).map_err(|e| e.to_string())?;
    }
    Ok(c)
}

fn main() -> ExitCode {
    // The CPU set must be read before any thread pins itself.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Fail-stop: a panicking shard would leave the others forwarding to a dead executor. Abort
    // the whole process instead; the next start recovers the logs from disk.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("shardlog: internal error (panic); aborting so that a restart recovers cleanly");
        std::process::abort();
    }));
    let args = Args::parse();
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardlog: {e}");
            return ExitCode::from(2);
        }
    };
    let cpus: Vec<usize> = cores.iter().map(|c| c.id).collect();
    match startup::run(config, cpus) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardlog: {e}");
            ExitCode::FAILURE
        }
    }
}
