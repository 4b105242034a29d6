//! `shardlog`: start a broker. Standalone by default: `shardlog` alone listens on
//! 127.0.0.1:9092 and stores under ./data. With `--zookeeper host:port` (or
//! `zookeeper.connect`) it joins a cluster coordinated by ZooKeeper. This file owns the
//! command line: flags, their precedence over the properties file and `--set`, and
//! `--print-config-reference`; the settings themselves are `shardlog_broker::config`'s.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shardlog_broker::config::{reference_markdown, BrokerConfig};
use shardlog_broker::startup;

/// Shardlog: a Kafka-compatible, thread-per-core message broker.
#[derive(Parser, Debug)]
#[command(name = "shardlog", version)]
struct Args {
    /// Address to listen on: host:port or PLAINTEXT://host:port; an empty host listens on every
    /// interface (Kafka: listeners).
    #[arg(long, env = "SHARDLOG_LISTEN")]
    listen: Option<String>,
    /// host:port given to clients in Metadata (Kafka: advertised.listeners). Defaults to the
    /// listen address, or this machine's host name when listening on a wildcard address.
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
    /// host:port of the HTTP metrics and health endpoint; empty = off (metrics.listen).
    #[arg(long, env = "SHARDLOG_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Print the configuration reference (docs/configuration.md, Markdown) and exit.
    #[arg(long)]
    print_config_reference: bool,
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
        c.set("listeners", l)
            .map_err(|e| format!("--listen: {e}"))?;
    }
    if let Some(a) = &args.advertised_listener {
        c.set("advertised.listeners", a)
            .map_err(|e| format!("--advertised-listener: {e}"))?;
    }
    if let Some(m) = &args.metrics_listen {
        c.set("metrics.listen", m)
            .map_err(|e| format!("--metrics-listen: {e}"))?;
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
    c.finalize().map_err(|e| e.to_string())?;
    Ok(c)
}

fn main() -> ExitCode {
    // The CPU set must be read before any thread pins itself.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    // Fail-stop: a panicking shard would leave the others forwarding to a dead executor. Abort
    // the whole process instead; the next start recovers the logs from disk.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("shardlog: internal error (panic); aborting so that a restart recovers cleanly");
        std::process::abort();
    }));
    let args = Args::parse();
    if args.print_config_reference {
        // Written without print! so that a closed pipe (`| head`) is an exit code, not a panic.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        return match out
            .write_all(reference_markdown().as_bytes())
            .and_then(|()| out.flush())
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardlog: {e}");
            return ExitCode::from(2);
        }
    };
    // Logging starts once the settings are known (`log.format`, `log.level`); errors before
    // this point go to stderr directly.
    if let Err(e) = shardlog_broker::logging::init(&config.log_format, &config.log_level) {
        eprintln!("shardlog: {e}");
        return ExitCode::from(2);
    }
    if let Some(warning) = config.ignored_keys_warning() {
        log::warn!("{warning}");
    }
    let cpus: Vec<usize> = cores.iter().map(|c| c.id).collect();
    let result = startup::run(config, cpus);
    // Writes the counts of messages still being summarised.
    log::logger().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardlog: {e}");
            ExitCode::FAILURE
        }
    }
}
