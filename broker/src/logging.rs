//! The broker's process-wide logger: the `log` facade's backend.
//!
//! It owns three things:
//! - the level filter, parsed by `env_filter` (the parser `env_logger` uses), so `log.level` in
//!   the settings and the `RUST_LOG` environment variable share one syntax; a non-empty
//!   `RUST_LOG` wins over the setting;
//! - the line formats: `text` for people (`[2026-12-06T18:00:00.123Z INFO  target] message`,
//!   close to `env_logger`'s default) and `json`, one object per line for log shippers;
//! - flood control: each call site prints at most [`LINES_PER_WINDOW`] lines per
//!   [`SUMMARY_WINDOW`]; the rest are counted and reported in one summary line when the window
//!   ends ("suppressed 2,611 similar messages in the last 10s (last: ...)"). The bookkeeping is
//!   [`Suppressor`], a plain struct with an explicit clock; a background thread named
//!   `log-summary` reports windows of call sites that went quiet.
//!
//! Lines go to stderr with one `write_all` each, so lines of different threads never interleave.
//! Write errors are ignored: a logger that fails must not take the broker down with it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::base::limits::LOG_SITES_MAX;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, Log, Metadata, Record};

/// Length of one flood-control window per call site.
pub const SUMMARY_WINDOW: Duration = Duration::from_secs(10);
/// Lines a call site may print per window before further ones are only counted.
pub const LINES_PER_WINDOW: u32 = 10;
/// How often the `log-summary` thread looks for ended windows of sites that went quiet.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often a full site table may be swept for idle sites from the logging path; between
/// sweeps, records of new sites are printed untracked rather than paying a sweep each.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The line format (`log.format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// Parses a `log.format` value: `text` or `json`.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "log.format must be \"text\" or \"json\", not {other:?}"
            )),
        }
    }
}

/// Where the level filter in effect came from; named in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecSource {
    RustLog,
    Setting,
}

impl SpecSource {
    fn name(self) -> &'static str {
        match self {
            SpecSource::RustLog => "RUST_LOG",
            SpecSource::Setting => "log.level",
        }
    }
}

/// Picks the filter spec: `RUST_LOG` when it is set and not blank, the `log.level` setting
/// otherwise. Pure, so the precedence is tested without touching the process environment.
pub fn choose_spec<'a>(rust_log: Option<&'a str>, level: &'a str) -> (&'a str, SpecSource) {
    match rust_log {
        Some(v) if !v.trim().is_empty() => (v, SpecSource::RustLog),
        _ => (level, SpecSource::Setting),
    }
}

/// Parses a `RUST_LOG`-style spec strictly: an unknown level or a malformed directive is an
/// error rather than a warning, so a typo in the settings fails the start instead of silently
/// logging less than asked.
pub fn build_filter(spec: &str, source: SpecSource) -> Result<env_filter::Filter, String> {
    if spec.trim().is_empty() {
        return Err(format!(
            "{} is empty; use a level such as \"info\"",
            source.name()
        ));
    }
    let mut builder = env_filter::Builder::new();
    builder
        .try_parse(spec)
        .map_err(|e| format!("{} {spec:?} is not a valid filter: {e}", source.name()))?;
    Ok(builder.build())
}

/// Installs the process-wide logger. `format` is `text` or `json`; `level` is a `RUST_LOG`-style
/// spec (`info`, `warn,shardlog_broker::server=debug`), overridden by a non-empty `RUST_LOG`.
/// Fails on a bad format or spec, a non-UTF-8 `RUST_LOG`, or when a logger is already installed.
pub fn init(format: &str, level: &str) -> Result<(), String> {
    let format = Format::parse(format)?;
    let rust_log = match std::env::var_os("RUST_LOG") {
        None => None,
        Some(v) => Some(
            v.into_string()
                .map_err(|_| "RUST_LOG is not valid UTF-8".to_string())?,
        ),
    };
    let (spec, source) = choose_spec(rust_log.as_deref(), level);
    let filter = build_filter(spec, source)?;
    let max_level = filter.filter();
    let logger = Logger {
        format,
        filter,
        suppressor: Mutex::new(Suppressor::new()),
    };
    static LOGGER: OnceLock<Logger> = OnceLock::new();
    if LOGGER.set(logger).is_err() {
        return Err("the logger is already installed".into());
    }
    let Some(logger) = LOGGER.get() else {
        return Err("the logger is already installed".into());
    };
    log::set_logger(logger).map_err(|_| "another logger is already installed".to_string())?;
    log::set_max_level(max_level);
    std::thread::Builder::new()
        .name("log-summary".into())
        .spawn(move || loop {
            std::thread::sleep(FLUSH_INTERVAL);
            let summaries = logger.lock().flush_expired(Instant::now());
            logger.write_summaries(&summaries);
        })
        .map_err(|e| format!("cannot start the log-summary thread: {e}"))?;
    Ok(())
}

struct Logger {
    format: Format,
    filter: env_filter::Filter,
    suppressor: Mutex<Suppressor>,
}

impl Logger {
    /// A panic elsewhere while holding the lock leaves only counters behind; keep using them.
    fn lock(&self) -> MutexGuard<'_, Suppressor> {
        self.suppressor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push_line(&self, out: &mut String, fields: &LineFields<'_>) {
        match self.format {
            Format::Text => push_text_line(out, fields),
            Format::Json => push_json_line(out, fields),
        }
    }

    /// A summary is printed at the level and under the target of the site it stands for.
    fn push_summary(&self, out: &mut String, s: &Summary, ts: &str, thread: &str) {
        self.push_line(
            out,
            &LineFields {
                ts,
                level: s.level,
                target: &s.target,
                msg: &s.message(),
                thread,
                suppressed: Some(s.count),
            },
        );
    }

    fn write_summaries(&self, summaries: &[Summary]) {
        if summaries.is_empty() {
            return;
        }
        let ts = format_rfc3339_millis(now_millis());
        let thread = thread_label();
        let mut out = String::new();
        for s in summaries {
            self.push_summary(&mut out, s, &ts, &thread);
        }
        write_stderr(&out);
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        // Formatted before taking the lock: a Display impl that logs must not deadlock.
        let msg = match record.args().as_str() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(record.args().to_string()),
        };
        let site = Site {
            target: record.target(),
            file: record.file().unwrap_or(""),
            line: record.line().unwrap_or(0),
            level: record.level(),
        };
        let decision = self.lock().record(&site, Instant::now(), &msg);
        let Decision::Emit(summary) = decision else {
            return;
        };
        let ts = format_rfc3339_millis(now_millis());
        let thread = thread_label();
        let mut out = String::with_capacity(msg.len() + 96);
        if let Some(s) = &summary {
            self.push_summary(&mut out, s, &ts, &thread);
        }
        self.push_line(
            &mut out,
            &LineFields {
                ts: &ts,
                level: record.level(),
                target: record.target(),
                msg: &msg,
                thread: &thread,
                suppressed: None,
            },
        );
        write_stderr(&out);
    }

    /// Reports every pending count now, windows ended or not, so a shutdown loses none.
    fn flush(&self) {
        let summaries = self.lock().drain_all();
        self.write_summaries(&summaries);
    }
}

/// One `write_all` per call: stderr is unbuffered and locked for the call, so the line(s)
/// reach the file descriptor whole. Errors are dropped on purpose (see the module docs).
fn write_stderr(out: &str) {
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

fn now_millis() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn thread_label() -> String {
    let current = std::thread::current();
    match current.name() {
        Some(name) => name.to_string(),
        None => format!("{:?}", current.id()),
    }
}

/// The pieces of one output line, shared by both formats.
struct LineFields<'a> {
    ts: &'a str,
    level: Level,
    target: &'a str,
    msg: &'a str,
    thread: &'a str,
    /// Set on summary lines: how many records the summary stands for.
    suppressed: Option<u64>,
}

fn push_text_line(out: &mut String, f: &LineFields<'_>) {
    use std::fmt::Write as _;
    // Writing into a String cannot fail.
    let _ = writeln!(out, "[{} {:<5} {}] {}", f.ts, f.level, f.target, f.msg);
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    ts: &'a str,
    level: &'a str,
    target: &'a str,
    msg: &'a str,
    thread: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    suppressed: Option<u64>,
}

fn push_json_line(out: &mut String, f: &LineFields<'_>) {
    let line = JsonLine {
        ts: f.ts,
        level: f.level.as_str(),
        target: f.target,
        msg: f.msg,
        thread: f.thread,
        suppressed: f.suppressed,
    };
    match serde_json::to_string(&line) {
        Ok(s) => out.push_str(&s),
        // Serialising borrowed strings and an integer does not fail; should it ever, the
        // line still says that something was logged rather than vanishing.
        Err(e) => {
            out.push_str("{\"level\":\"ERROR\",\"msg\":\"unserialisable log line: ");
            out.push_str(&e.to_string().replace(['"', '\\'], "'"));
            out.push_str("\"}");
        }
    }
    out.push('\n');
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds,
/// e.g. `2000-02-29T00:00:00.123Z`.
pub fn format_rfc3339_millis(ms: u64) -> String {
    shardlog_protocol::time::rfc3339_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Formats a count with thousands separators: 2611 -> "2,611".
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    // A separator goes before every digit with a multiple of three digits after it.
    let lead = digits.len() % 3;
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % 3 == lead {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn describe_window(window: Duration) -> String {
    if window.subsec_nanos() == 0 {
        format!("{}s", window.as_secs())
    } else {
        format!("{}ms", window.as_millis())
    }
}

/// A call site as the suppressor sees it: where a record was logged and at which level.
#[derive(Clone, Copy, Debug)]
pub struct Site<'a> {
    pub target: &'a str,
    pub file: &'a str,
    pub line: u32,
    pub level: Level,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SiteKey {
    target: String,
    file: String,
    line: u32,
    level: Level,
}

impl SiteKey {
    fn of(site: &Site<'_>) -> SiteKey {
        SiteKey {
            target: site.target.to_string(),
            file: site.file.to_string(),
            line: site.line,
            level: site.level,
        }
    }
}

struct SiteState {
    window_start: Instant,
    emitted: u32,
    suppressed: u64,
    last: String,
}

impl SiteState {
    /// The summary of the records counted so far (none if none were), and a count of zero.
    fn take_summary(&mut self, target: &str, level: Level, window: Duration) -> Option<Summary> {
        if self.suppressed == 0 {
            return None;
        }
        let count = std::mem::replace(&mut self.suppressed, 0);
        Some(Summary {
            target: target.to_string(),
            level,
            count,
            last: std::mem::take(&mut self.last),
            window,
        })
    }
}

/// The report of a window in which a call site was cut short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub target: String,
    pub level: Level,
    /// Records counted instead of printed.
    pub count: u64,
    /// The last of them, verbatim.
    pub last: String,
    /// The window length, for the message.
    pub window: Duration,
}

impl Summary {
    /// The summary's message, e.g.
    /// `suppressed 2,611 similar messages in the last 10s (last: broker 3 is not alive)`.
    pub fn message(&self) -> String {
        format!(
            "suppressed {} similar message{} in the last {} (last: {})",
            group_thousands(self.count),
            if self.count == 1 { "" } else { "s" },
            describe_window(self.window),
            self.last
        )
    }
}

/// What to do with one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Print it; first print the summary of the site's previous window, if there is one.
    Emit(Option<Summary>),
    /// Count it and print nothing.
    Suppress,
}

/// Per-call-site flood control with an explicit clock: at most `per_window` lines per
/// `window` per site, the rest counted and summarised when the window ends.
pub struct Suppressor {
    window: Duration,
    per_window: u32,
    max_sites: usize,
    sites: HashMap<SiteKey, SiteState>,
    last_sweep: Option<Instant>,
}

impl Default for Suppressor {
    fn default() -> Self {
        Suppressor::new()
    }
}

impl Suppressor {
    /// A suppressor with the module's constants.
    pub fn new() -> Suppressor {
        Suppressor::with_limits(SUMMARY_WINDOW, LINES_PER_WINDOW, LOG_SITES_MAX)
    }

    /// A suppressor with other limits (for tests).
    pub fn with_limits(window: Duration, per_window: u32, max_sites: usize) -> Suppressor {
        Suppressor {
            window,
            per_window,
            max_sites,
            sites: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Sites currently tracked.
    pub fn tracked_sites(&self) -> usize {
        self.sites.len()
    }

    /// Decides about one record of `site` logged at `now` with message `msg`.
    pub fn record(&mut self, site: &Site<'_>, now: Instant, msg: &str) -> Decision {
        let key = SiteKey::of(site);
        if !self.sites.contains_key(&key) && self.sites.len() >= self.max_sites {
            self.sweep_idle(now);
            if self.sites.len() >= self.max_sites {
                // Every tracked site is busy: print this one untracked rather than evict a
                // site whose count would then be lost.
                return Decision::Emit(None);
            }
        }
        let window = self.window;
        let state = self.sites.entry(key).or_insert_with(|| SiteState {
            window_start: now,
            emitted: 0,
            suppressed: 0,
            last: String::new(),
        });
        let mut summary = None;
        if now.saturating_duration_since(state.window_start) >= window {
            summary = state.take_summary(site.target, site.level, window);
            state.window_start = now;
            state.emitted = 0;
            state.suppressed = 0;
        }
        if state.emitted < self.per_window {
            state.emitted += 1;
            Decision::Emit(summary)
        } else {
            state.suppressed += 1;
            state.last.clear();
            state.last.push_str(msg);
            Decision::Suppress
        }
    }

    /// Summaries of sites whose window has ended with records counted, and forgets every site
    /// whose window has ended: its next record starts a fresh window anyway.
    pub fn flush_expired(&mut self, now: Instant) -> Vec<Summary> {
        let window = self.window;
        let mut out = Vec::new();
        self.sites.retain(|key, state| {
            if now.saturating_duration_since(state.window_start) < window {
                return true;
            }
            out.extend(state.take_summary(&key.target, key.level, window));
            false
        });
        out
    }

    /// Summaries of every site with records counted, windows ended or not (for shutdown).
    pub fn drain_all(&mut self) -> Vec<Summary> {
        let window = self.window;
        let mut out = Vec::new();
        for (key, state) in self.sites.iter_mut() {
            out.extend(state.take_summary(&key.target, key.level, window));
        }
        out
    }

    /// Drops sites whose window has ended and that owe no summary, at most once per
    /// [`SWEEP_INTERVAL`] so that a full table does not cost a scan per record.
    fn sweep_idle(&mut self, now: Instant) {
        if let Some(last) = self.last_sweep {
            if now.saturating_duration_since(last) < SWEEP_INTERVAL {
                return;
            }
        }
        self.last_sweep = Some(now);
        let window = self.window;
        self.sites.retain(|_, state| {
            now.saturating_duration_since(state.window_start) < window || state.suppressed > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(target: &str, line: u32) -> Site<'_> {
        Site {
            target,
            file: "src/x.rs",
            line,
            level: Level::Warn,
        }
    }

    #[test]
    fn rust_log_beats_the_setting_unless_blank() {
        assert_eq!(
            choose_spec(Some("debug"), "info"),
            ("debug", SpecSource::RustLog)
        );
        assert_eq!(choose_spec(None, "info"), ("info", SpecSource::Setting));
        assert_eq!(choose_spec(Some(""), "info"), ("info", SpecSource::Setting));
        assert_eq!(
            choose_spec(Some("  "), "warn,a=debug"),
            ("warn,a=debug", SpecSource::Setting)
        );
    }

    #[test]
    fn filter_specs_parse_like_rust_log() {
        let f = build_filter("warn,shardlog_broker::server=debug", SpecSource::Setting).unwrap();
        assert_eq!(f.filter(), log::LevelFilter::Debug);
        let meta =
            |target: &'static str, level| Metadata::builder().target(target).level(level).build();
        assert!(f.enabled(&meta("shardlog_broker::server", Level::Debug)));
        assert!(f.enabled(&meta("shardlog_broker::server::conn", Level::Debug)));
        assert!(!f.enabled(&meta("shardlog_broker::startup", Level::Info)));
        assert!(f.enabled(&meta("shardlog_broker::startup", Level::Warn)));

        let info = build_filter("info", SpecSource::Setting).unwrap();
        assert_eq!(info.filter(), log::LevelFilter::Info);

        let e = build_filter("info,foo=loud", SpecSource::RustLog).unwrap_err();
        assert!(e.starts_with("RUST_LOG \"info,foo=loud\""), "{e}");
        let e = build_filter(" ", SpecSource::Setting).unwrap_err();
        assert!(e.contains("log.level is empty"), "{e}");
    }

    #[test]
    fn format_names() {
        assert_eq!(Format::parse("text"), Ok(Format::Text));
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert!(Format::parse("JSON").is_err());
        // Refused before anything global is touched, so safe to call from a test.
        let e = init("xml", "info").unwrap_err();
        assert!(e.contains("\"xml\""), "{e}");
    }

    #[test]
    fn timestamps_at_known_epochs() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339_millis(951_868_799_999),
            "2000-02-29T23:59:59.999Z"
        );
        assert_eq!(
            format_rfc3339_millis(1_700_000_000_000),
            "2023-11-14T22:13:20.000Z"
        );
        // 1900 was not a leap year, 2100 will not be either.
        assert_eq!(
            format_rfc3339_millis(4_107_542_400_000),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_millis(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn thousands_groups() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(2611), "2,611");
        assert_eq!(group_thousands(1_000_000), "1,000,000");
    }

    fn fields<'a>(msg: &'a str, suppressed: Option<u64>) -> LineFields<'a> {
        LineFields {
            ts: "2026-12-06T18:00:00.123Z",
            level: Level::Info,
            target: "shardlog_broker::startup",
            msg,
            thread: "shard-0",
            suppressed,
        }
    }

    #[test]
    fn text_lines_look_like_env_logger() {
        let mut out = String::new();
        push_text_line(&mut out, &fields("ready", None));
        assert_eq!(
            out,
            "[2026-12-06T18:00:00.123Z INFO  shardlog_broker::startup] ready\n"
        );
    }

    #[test]
    fn json_lines_escape_quotes_newlines_and_control_characters() {
        let msg = "cannot open \"a\\b\"\nsecond line\ttab \u{1} bell\u{7} é";
        let mut out = String::new();
        push_json_line(&mut out, &fields(msg, None));
        assert!(out.ends_with('\n'));
        assert_eq!(out.matches('\n').count(), 1, "one line: {out}");
        assert!(
            out.contains(r#""msg":"cannot open \"a\\b\"\nsecond line\ttab \u0001 bell\u0007 é""#),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["msg"], msg);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["ts"], "2026-12-06T18:00:00.123Z");
        assert_eq!(v["target"], "shardlog_broker::startup");
        assert_eq!(v["thread"], "shard-0");
        assert!(v.get("suppressed").is_none());

        let mut out = String::new();
        push_json_line(&mut out, &fields("suppressed 3 similar messages", Some(3)));
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["suppressed"], 3);
    }

    #[test]
    fn a_site_prints_ten_lines_per_window_then_counts() {
        let mut s = Suppressor::new();
        let t0 = Instant::now();
        let a = site("shardlog_broker::partition::replication", 42);
        for i in 0..LINES_PER_WINDOW {
            assert_eq!(
                s.record(&a, t0 + Duration::from_millis(u64::from(i)), "isr"),
                Decision::Emit(None),
                "line {i}"
            );
        }
        for i in 0..2611u64 {
            let msg = format!("broker 3 is not alive ({i})");
            assert_eq!(
                s.record(&a, t0 + Duration::from_millis(100 + i), &msg),
                Decision::Suppress
            );
        }
        // Still inside the window: nothing to flush yet.
        assert!(s
            .flush_expired(t0 + SUMMARY_WINDOW - Duration::from_millis(1))
            .is_empty());
        // The next record after the window carries the summary and is printed itself.
        let Decision::Emit(Some(summary)) = s.record(&a, t0 + SUMMARY_WINDOW, "again") else {
            panic!("expected a summary");
        };
        assert_eq!(summary.count, 2611);
        assert_eq!(summary.level, Level::Warn);
        assert_eq!(summary.target, "shardlog_broker::partition::replication");
        assert_eq!(
            summary.message(),
            "suppressed 2,611 similar messages in the last 10s (last: broker 3 is not alive (2610))"
        );
        // The new window started with that record: nine more pass, then counting again.
        let t1 = t0 + SUMMARY_WINDOW;
        for _ in 1..LINES_PER_WINDOW {
            assert_eq!(s.record(&a, t1, "x"), Decision::Emit(None));
        }
        assert_eq!(s.record(&a, t1, "x"), Decision::Suppress);
    }

    #[test]
    fn a_quiet_site_is_summarised_by_the_flusher() {
        let mut s = Suppressor::with_limits(Duration::from_secs(10), 2, 100);
        let t0 = Instant::now();
        let a = site("a", 1);
        s.record(&a, t0, "1");
        s.record(&a, t0, "2");
        assert_eq!(s.record(&a, t0, "3"), Decision::Suppress);
        let summaries = s.flush_expired(t0 + Duration::from_secs(10));
        assert_eq!(summaries.len(), 1);
        assert_eq!(
            summaries[0].message(),
            "suppressed 1 similar message in the last 10s (last: 3)"
        );
        // Flushed sites are forgotten; the next record starts afresh with no second summary.
        assert_eq!(s.tracked_sites(), 0);
        assert_eq!(
            s.record(&a, t0 + Duration::from_secs(11), "4"),
            Decision::Emit(None)
        );
        assert!(s.flush_expired(t0 + Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn a_window_without_suppression_ends_silently() {
        let mut s = Suppressor::with_limits(Duration::from_secs(10), 2, 100);
        let t0 = Instant::now();
        let a = site("a", 1);
        s.record(&a, t0, "1");
        assert_eq!(
            s.record(&a, t0 + Duration::from_secs(20), "2"),
            Decision::Emit(None)
        );
    }

    #[test]
    fn sites_are_independent() {
        let mut s = Suppressor::with_limits(Duration::from_secs(10), 1, 100);
        let t0 = Instant::now();
        let a = site("t", 1);
        let b = site("t", 2);
        let c = site("u", 1);
        let a_error = Site {
            level: Level::Error,
            ..a
        };
        assert_eq!(s.record(&a, t0, "a"), Decision::Emit(None));
        assert_eq!(s.record(&a, t0, "a"), Decision::Suppress);
        assert_eq!(s.record(&b, t0, "b"), Decision::Emit(None));
        assert_eq!(s.record(&c, t0, "c"), Decision::Emit(None));
        assert_eq!(s.record(&a_error, t0, "e"), Decision::Emit(None));
        assert_eq!(s.record(&b, t0, "b"), Decision::Suppress);
        assert_eq!(s.record(&b, t0, "b2"), Decision::Suppress);
        let mut summaries = s.flush_expired(t0 + Duration::from_secs(10));
        summaries.sort_by_key(|s| s.count);
        let counts: Vec<(u64, &str)> = summaries
            .iter()
            .map(|s| (s.count, s.last.as_str()))
            .collect();
        assert_eq!(counts, vec![(1, "a"), (2, "b2")]);
    }

    #[test]
    fn the_site_table_is_capped_and_idle_sites_are_evicted() {
        let mut s = Suppressor::with_limits(Duration::from_secs(10), 1, 3);
        let t0 = Instant::now();
        for line in 0..3 {
            s.record(&site("t", line), t0, "m");
        }
        // Site 0 owes a summary.
        assert_eq!(s.record(&site("t", 0), t0, "m"), Decision::Suppress);
        // Full, every site still in its window: a new site is printed but not tracked.
        assert_eq!(s.record(&site("t", 3), t0, "m"), Decision::Emit(None));
        assert_eq!(s.record(&site("t", 3), t0, "m"), Decision::Emit(None));
        assert_eq!(s.tracked_sites(), 3);
        // After the window, idle sites make room; the one owing a summary stays for the flusher.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.record(&site("t", 4), t1, "m"), Decision::Emit(None));
        assert_eq!(s.record(&site("t", 4), t1, "m"), Decision::Suppress);
        assert_eq!(s.tracked_sites(), 2);
        let summaries = s.flush_expired(t1);
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].count, 1);
    }

    #[test]
    fn drain_reports_pending_counts_before_the_window_ends() {
        let mut s = Suppressor::with_limits(Duration::from_secs(10), 1, 100);
        let t0 = Instant::now();
        let a = site("a", 1);
        s.record(&a, t0, "1");
        s.record(&a, t0, "2");
        let drained = s.drain_all();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].count, 1);
        assert!(s.drain_all().is_empty());
        assert!(s.flush_expired(t0 + Duration::from_secs(10)).is_empty());
    }
}
