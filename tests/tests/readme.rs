//! The README as code: every ```` ```sh ```` block in README.md runs here verbatim, as a new user
//! would paste it, from a fresh working directory inside the checkout.
//!
//! Conventions (README.md follows them; this file enforces them):
//!
//! - Each ```` ```sh ```` block has exactly one annotation on the line right above its opening
//!   fence: `<!-- readme-test: start -->` (starts a standalone broker; run in the background),
//!   `<!-- readme-test: walkthrough -->` (run in order once that broker is ready, against it),
//!   `<!-- readme-test: cluster -->` (run on its own) or `<!-- readme-test: skip REASON -->` (not
//!   run, e.g. the test suite's own command). A ```` ```sh ```` block without one, an annotation
//!   above anything else, a `bash`/`shell`/`console` fence or an indented code block fails the
//!   test, so no command reaches the README untested. Text that is not a command (a usage
//!   synopsis) goes in a ```` ```text ```` block, which is not run.
//! - Each run happens in new network, PID and mount namespaces (`unshare`; the suite runs as
//!   root). The private loopback interface gives the README's fixed ports (9092, 2181, 9091-9093)
//!   to the test alone, so the commands need no port variables; the private PID namespace makes
//!   every background process the README starts (brokers, ZooKeeper's JVM) die with the run.
//! - Each block runs as a script of its own with `bash -euo pipefail`: the commands are the
//!   README's, unchanged, and every one of them must succeed, not just the last.
//!
//! The README's test command (its `skip` block running `scripts/test.sh`) must also be what CI
//! runs (`.ci/run`), so that the two cannot drift apart.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shardlog_tests::workspace_root;

/// The whole standalone run (broker start, walkthrough, clean stop) must fit in this, once the
/// binaries are built.
const STANDALONE_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the driver waits for the broker started by the `start` block to say `ready` and
/// accept connections on 127.0.0.1:9092.
const BROKER_READY_SECS: u32 = 120;
/// The whole cluster block (ZooKeeper, three brokers, topic creation) must fit in this.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(240);

/// What the walkthrough prints when it works: the three records it produced, consumed back with
/// the README's `--format`, the offline check of the broker's data directory, and the health and
/// metrics endpoints.
const WALKTHROUGH_EXPECTS: &[&str] = &[
    "alice=apple",
    "bob=banana",
    "carol=cherry",
    "no damage found",
    "ready",
    "shardlog_topic_records_in_total{topic=\"orders\"} 3",
];
/// The topic the cluster block creates and describes, as its describe output must show it.
const CLUSTER_TOPIC_PARTITIONS: usize = 6;
const CLUSTER_TOPIC_REPLICAS: usize = 3;

/// Only one README run at a time: a standalone broker and a three-broker cluster with its JVM at
/// once would overload a two-core machine, and the run timeouts would then mean nothing.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Start,
    Walkthrough,
    Cluster,
    Skip(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    kind: Kind,
    /// 1-based line of the opening fence, for messages.
    line: usize,
    /// The block's lines, exactly as in the README, each ending in a newline.
    text: String,
}

const ANNOTATION_PREFIX: &str = "<!-- readme-test:";
const ANNOTATION_SUFFIX: &str = "-->";
/// Fence languages that would read as shell commands: only `sh` is allowed for those, so that
/// one annotated kind covers every command.
const OTHER_SHELL_LANGUAGES: &[&str] = &["bash", "shell", "console", "zsh", "shell-session"];

fn parse_annotation(line: &str) -> Option<Result<Kind, String>> {
    let rest = line.trim().strip_prefix(ANNOTATION_PREFIX)?;
    let Some(body) = rest.strip_suffix(ANNOTATION_SUFFIX) else {
        return Some(Err(format!(
            "an annotation must be one line ending in {ANNOTATION_SUFFIX:?}"
        )));
    };
    let body = body.trim();
    let (word, reason) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
    Some(match (word, reason.trim()) {
        ("start", "") => Ok(Kind::Start),
        ("walkthrough", "") => Ok(Kind::Walkthrough),
        ("cluster", "") => Ok(Kind::Cluster),
        ("skip", "") => Err("`skip` needs a reason: <!-- readme-test: skip WHY -->".into()),
        ("skip", why) => Ok(Kind::Skip(why.to_string())),
        (w, extra) => Err(format!(
            "unknown annotation {:?}; use start, walkthrough, cluster or skip REASON",
            format!("{w} {extra}").trim()
        )),
    })
}

fn is_list_item(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("- ")
        || t.starts_with("* ")
        || t.starts_with("+ ")
        || t.split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every ```` ```sh ```` block of `markdown` with its annotation, or every violation of the
/// conventions in the module docs (all of them, with line numbers, so that one run lists every
/// fix needed).
fn parse_readme(markdown: &str) -> Result<Vec<Block>, Vec<String>> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let n = i + 1;
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if indent <= 3 && (trimmed.starts_with("```") || trimmed.starts_with("~~~")) {
            let marker = &trimmed[..3];
            let lang = trimmed[3..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            let mut body = String::new();
            let mut j = i + 1;
            while j < lines.len() && !lines[j].trim_start().starts_with(marker) {
                body.push_str(lines[j]);
                body.push('\n');
                j += 1;
            }
            if j == lines.len() {
                problems.push(format!("line {n}: code block never closed"));
            }
            if OTHER_SHELL_LANGUAGES.contains(&lang.as_str()) {
                problems.push(format!(
                    "line {n}: ```{lang} block: commands go in ```sh blocks (with an annotation), \
                     other text in ```text"
                ));
            } else if lang == "sh" {
                match i.checked_sub(1).and_then(|p| parse_annotation(lines[p])) {
                    Some(Ok(kind)) => blocks.push(Block {
                        kind,
                        line: n,
                        text: body,
                    }),
                    // Reported where the annotation line itself is visited.
                    Some(Err(_)) => {}
                    None => problems.push(format!(
                        "line {n}: ```sh block without a `<!-- readme-test: start | walkthrough | \
                         cluster | skip REASON -->` line right above it"
                    )),
                }
            }
            i = j + 1;
            continue;
        }
        if let Some(annotation) = parse_annotation(line) {
            if let Err(e) = annotation {
                problems.push(format!("line {n}: {e}"));
            }
            if lines.get(i + 1).is_none_or(|l| l.trim() != "```sh") {
                problems.push(format!(
                    "line {n}: annotation not directly above a ```sh block"
                ));
            }
        }
        // An indented code block: four spaces after a blank line, not inside a list item.
        let previous_text = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
        if indent >= 4
            && !trimmed.is_empty()
            && i > 0
            && lines[i - 1].trim().is_empty()
            && previous_text.is_none_or(|p| !p.starts_with(' ') && !is_list_item(p))
        {
            problems.push(format!(
                "line {n}: indented code block: use a fenced ```sh block with an annotation \
                 (or ```text for what is not a command)"
            ));
        }
        i += 1;
    }
    if problems.is_empty() {
        Ok(blocks)
    } else {
        Err(problems)
    }
}

fn readme_blocks() -> Vec<Block> {
    let path = workspace_root().join("README.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_readme(&text).unwrap_or_else(|problems| {
        panic!(
            "README.md breaks the readme-test conventions (see tests/tests/readme.rs):\n{}",
            problems.join("\n")
        )
    })
}

fn blocks_of(blocks: &[Block], kind: &Kind) -> Vec<Block> {
    blocks.iter().filter(|b| &b.kind == kind).cloned().collect()
}

/// A fresh working directory for one run, inside the checkout (`target/readme-test/`), so that
/// cargo finds the workspace from it by walking up, as it does for a user in any subdirectory.
/// `work/` is where the README's commands run and starts empty; `harness/` holds the block
/// scripts and their outputs. Removed when dropped, data directories included.
struct RunDir {
    root: PathBuf,
}

impl RunDir {
    fn new(name: &str) -> RunDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let root = workspace_root()
            .join("target")
            .join("readme-test")
            .join(format!("{name}-{}-{nanos}", std::process::id()));
        for sub in ["work", "harness"] {
            std::fs::create_dir_all(root.join(sub))
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        }
        RunDir { root }
    }

    fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    fn harness(&self) -> PathBuf {
        self.root.join("harness")
    }

    /// Writes a block's text, unchanged, as `harness/<name>.sh`.
    fn write_block(&self, name: &str, block: &Block) {
        let path = self.harness().join(format!("{name}.sh"));
        std::fs::write(&path, &block.text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }

    /// A block's exit status as the driver recorded it; `None` if it never finished.
    fn exit_code(&self, name: &str) -> Option<i32> {
        self.read(&format!("harness/{name}.rc")).trim().parse().ok()
    }

    /// Every output of the run, for a failure message: the driver's, each block's, and the log
    /// files the README's commands wrote in the working directory.
    fn report(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = Vec::new();
        for sub in ["harness", "work"] {
            if let Ok(entries) = std::fs::read_dir(self.root.join(sub)) {
                files.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("out" | "log" | "sh")
                    )
                }));
            }
        }
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let _ = writeln!(out, "===== {} =====\n{text}", f.display());
        }
        out
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Builds a binary the README's `cargo run` commands use, with the same package and binary
/// selection (hence the same features and artifacts), so that the timed runs find it fresh: a
/// first compile inside them would measure the compiler, not the README.
fn build_release(package: &str, bin: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", package, "--bin", bin])
        .current_dir(workspace_root())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {bin} (release) failed");
}

/// Runs `driver` with bash in new network, PID and mount namespaces, in the run's `work/`
/// directory, with the harness directory as `$1`; kills everything in the namespaces after
/// `timeout`. Returns the driver's exit status, or `None` on timeout.
fn run_in_namespaces(dir: &RunDir, driver: &str, timeout: Duration) -> Option<ExitStatus> {
    let driver_out = dir.harness().join("driver.out");
    let out = std::fs::File::create(&driver_out).expect("driver output file");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--net",
        "--pid",
        "--mount-proc",
        "--fork",
        "--kill-child",
        "bash",
        "-c",
        driver,
        "readme-driver",
    ])
    .arg(dir.harness())
    .current_dir(dir.work())
    .stdin(Stdio::null())
    .stdout(out.try_clone().expect("dup"))
    .stderr(out);
    // A user's shell has none of the test's settings: no log filter, no broker or bootstrap
    // overrides from scripts/test.sh.
    cmd.env_remove("RUST_LOG");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHARDLOG_") {
            cmd.env_remove(&key);
        }
    }
    // `cargo` in the README is the cargo running this test (its toolchain, its target dir).
    if let Some(dir) = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|c| c.parent().map(Path::to_path_buf))
    {
        let mut path = std::ffi::OsString::from(dir);
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        cmd.env("PATH", path);
    }
    // SAFETY: prctl in the forked child before exec, async-signal-safe. If this test process
    // dies, unshare gets SIGKILL, and --kill-child takes the namespaces down with it.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run unshare (util-linux; needs root): {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("waiting for unshare: {e}"),
        }
    }
}

/// The bash function the drivers run blocks with: `run_block NAME` runs `$H/NAME.sh` with
/// errexit, nounset and pipefail, output to `$H/NAME.out`, exit status to `$H/NAME.rc`.
const RUN_BLOCK_FN: &str = r#"
H="$1"
ip link set lo up || { echo "cannot bring up loopback in the new network namespace" >&2; exit 90; }
run_block() {
  bash -euo pipefail "$H/$1.sh" > "$H/$1.out" 2>&1 < /dev/null
  local rc=$?
  echo "$rc" > "$H/$1.rc"
  echo "block $1 exited $rc after $SECONDS s"
  return "$rc"
}
"#;

fn lock_runs() -> std::sync::MutexGuard<'static, ()> {
    ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fail(dir: &RunDir, what: &str) -> ! {
    panic!("{what}\n{}\n{what}", dir.report());
}

#[test]
fn readme_start_and_walkthrough_run_verbatim() {
    let blocks = readme_blocks();
    let start = blocks_of(&blocks, &Kind::Start);
    let walkthrough = blocks_of(&blocks, &Kind::Walkthrough);
    assert_eq!(start.len(), 1, "README.md needs exactly one `start` block");
    assert!(
        !walkthrough.is_empty(),
        "README.md has no `walkthrough` block"
    );
    let _one = lock_runs();
    build_release("shardlog-broker", "shardlog");
    build_release("shardlog-tools", "shardlog-cli");

    let dir = RunDir::new("standalone");
    dir.write_block("start", &start[0]);
    let mut driver = RUN_BLOCK_FN.to_string();
    // The start block runs in the background, like a broker left running in a first terminal;
    // the walkthrough waits for what a user waits for: `ready` in the log and the port open.
    let _ = write!(
        driver,
        r#"
bash -euo pipefail "$H/start.sh" > "$H/start.out" 2>&1 < /dev/null &
start=$!
until grep -qw ready "$H/start.out" && (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; do
  if ! kill -0 "$start" 2>/dev/null; then
    wait "$start"; echo "$?" > "$H/start.rc"
    echo "the start block exited before the broker was ready"; exit 91
  fi
  if [ "$SECONDS" -ge {BROKER_READY_SECS} ]; then
    echo "the broker was not ready within {BROKER_READY_SECS} s"; exit 92
  fi
  sleep 0.2
done
echo "broker ready after $SECONDS s"
"#
    );
    for (k, block) in walkthrough.iter().enumerate() {
        let name = format!("walkthrough-{}", k + 1);
        dir.write_block(&name, block);
        let _ = writeln!(driver, "run_block {name} || true");
    }
    // SIGTERM as a user's Ctrl-C or service manager would send it, to the broker itself (the
    // start script's child; `cargo run` execs the broker), and its exit status through the
    // script, which exits with it.
    driver.push_str(
        r#"
broker=$(pgrep -P "$start" || true)
kill -TERM ${broker:-$start}
wait "$start"
echo "$?" > "$H/start.rc"
echo "start block exited $(cat "$H/start.rc") after SIGTERM, $SECONDS s"
"#,
    );

    let began = Instant::now();
    let status = run_in_namespaces(&dir, &driver, STANDALONE_TIMEOUT);
    eprintln!("standalone README run took {:?}", began.elapsed());
    match status {
        None => fail(
            &dir,
            &format!("the standalone README run did not finish within {STANDALONE_TIMEOUT:?}"),
        ),
        Some(s) if !s.success() => fail(&dir, &format!("the README driver failed ({s})")),
        Some(_) => {}
    }
    for (k, block) in walkthrough.iter().enumerate() {
        let name = format!("walkthrough-{}", k + 1);
        if dir.exit_code(&name) != Some(0) {
            fail(
                &dir,
                &format!(
                    "the walkthrough block at README.md line {} failed ({name}.out above)",
                    block.line
                ),
            );
        }
    }
    let broker_log = dir.read("harness/start.out");
    if !broker_log.split_whitespace().any(|w| w == "ready") {
        fail(&dir, "the broker never logged `ready`");
    }
    if let Some(bad) = broker_log
        .lines()
        .find(|l| l.contains("ERROR") || l.contains("panicked"))
    {
        fail(&dir, &format!("the broker logged an error: {bad}"));
    }
    let stopped = dir.exit_code("start");
    if stopped != Some(0) {
        fail(
            &dir,
            &format!("the broker did not exit 0 after SIGTERM (exit status {stopped:?})"),
        );
    }
    let printed: String = (1..=walkthrough.len())
        .map(|k| dir.read(&format!("harness/walkthrough-{k}.out")))
        .collect();
    for expected in WALKTHROUGH_EXPECTS {
        if !printed.contains(expected) {
            fail(
                &dir,
                &format!("the walkthrough's output lacks {expected:?}"),
            );
        }
    }
}

#[test]
fn readme_cluster_section_runs_verbatim() {
    let blocks = readme_blocks();
    let cluster = blocks_of(&blocks, &Kind::Cluster);
    assert!(!cluster.is_empty(), "README.md has no `cluster` block");
    let _one = lock_runs();
    build_release("shardlog-broker", "shardlog");
    build_release("shardlog-tools", "shardlog-cli");

    let dir = RunDir::new("cluster");
    let mut driver = RUN_BLOCK_FN.to_string();
    for (k, block) in cluster.iter().enumerate() {
        let name = format!("cluster-{}", k + 1);
        dir.write_block(&name, block);
        let _ = writeln!(driver, "run_block {name} || exit 0");
    }
    // The driver is the namespace's init: when it exits, ZooKeeper and the brokers the block
    // left running in the background die with it.

    let began = Instant::now();
    let status = run_in_namespaces(&dir, &driver, CLUSTER_TIMEOUT);
    eprintln!("cluster README run took {:?}", began.elapsed());
    match status {
        None => fail(
            &dir,
            &format!("the README's cluster section did not finish within {CLUSTER_TIMEOUT:?}"),
        ),
        Some(s) if !s.success() => fail(&dir, &format!("the README driver failed ({s})")),
        Some(_) => {}
    }
    for (k, block) in cluster.iter().enumerate() {
        if dir.exit_code(&format!("cluster-{}", k + 1)) != Some(0) {
            fail(
                &dir,
                &format!(
                    "the cluster block at README.md line {} failed (its .out above)",
                    block.line
                ),
            );
        }
    }
    let output: String = (1..=cluster.len())
        .map(|k| dir.read(&format!("harness/cluster-{k}.out")))
        .collect();
    let replicas = described_replicas(&output);
    if replicas.len() != CLUSTER_TOPIC_PARTITIONS
        || replicas.iter().any(|r| r.len() != CLUSTER_TOPIC_REPLICAS)
    {
        fail(
            &dir,
            &format!(
                "`topic describe` should show {CLUSTER_TOPIC_PARTITIONS} partitions with \
                 {CLUSTER_TOPIC_REPLICAS} replicas each; it showed replicas {replicas:?}"
            ),
        );
    }
    for entry in std::fs::read_dir(dir.work()).expect("work dir").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(bad) = log.lines().find(|l| l.contains("panicked")) {
                fail(&dir, &format!("{} shows a panic: {bad}", path.display()));
            }
        }
    }
}

/// The REPLICAS column of each row of the partition table `shardlog-cli topic describe` prints
/// (`PARTITION LEADER EPOCH REPLICAS ISR OFFLINE`), as lists of broker ids.
fn described_replicas(output: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in output.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() == Some(&"PARTITION") {
            in_table = cols.get(3) == Some(&"REPLICAS");
            continue;
        }
        if in_table {
            match (cols.first(), cols.get(3)) {
                (Some(p), Some(replicas)) if p.parse::<i32>().is_ok() => {
                    rows.push(replicas.split(',').map(str::to_string).collect());
                }
                _ => in_table = false,
            }
        }
    }
    rows
}

#[test]
fn readme_test_command_is_what_ci_runs() {
    let blocks = readme_blocks();
    let commands: Vec<&str> = blocks
        .iter()
        .filter(|b| matches!(b.kind, Kind::Skip(_)))
        .flat_map(|b| b.text.lines())
        .map(str::trim)
        .filter(|l| l.starts_with("scripts/test.sh"))
        .collect();
    assert_eq!(
        commands.len(),
        1,
        "README.md should show the test command (scripts/test.sh) once, in a skip block; found \
         {commands:?}"
    );
    let ci_path = workspace_root().join(".ci/run");
    let ci = std::fs::read_to_string(&ci_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", ci_path.display()));
    let ci_command = ci
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    let ci_command = ci_command.strip_prefix("exec ").unwrap_or(ci_command);
    assert_eq!(
        ci_command, commands[0],
        ".ci/run must end by running the README's test command"
    );
}

#[test]
fn conventions_refuse_unannotated_and_misannotated_commands() {
    let good = "# T\n\n<!-- readme-test: start -->\n```sh\ncargo run\n```\n\n\
                <!-- readme-test: skip CI runs it -->\n```sh\nscripts/test.sh\n```\n\n\
                ```text\nshardlog [--listen A]\n```\n\n- a list\n\n    continued\n";
    let blocks = parse_readme(good).expect("conventions kept");
    assert_eq!(
        blocks,
        vec![
            Block {
                kind: Kind::Start,
                line: 4,
                text: "cargo run\n".into()
            },
            Block {
                kind: Kind::Skip("CI runs it".into()),
                line: 9,
                text: "scripts/test.sh\n".into()
            },
        ]
    );

    let cases = [
        ("```sh\nrm -rf /\n```\n", "without a `<!-- readme-test"),
        (
            "<!-- readme-test: walkthrough -->\n\n```sh\nls\n```\n",
            "not directly above",
        ),
        (
            "<!-- readme-test: skip -->\n```sh\nls\n```\n",
            "needs a reason",
        ),
        (
            "<!-- readme-test: maybe -->\n```sh\nls\n```\n",
            "unknown annotation",
        ),
        ("```bash\nls\n```\n", "```bash block"),
        ("Run:\n\n    cargo run\n", "indented code block"),
        ("<!-- readme-test: cluster -->\n```sh\nls\n", "never closed"),
    ];
    for (markdown, expected) in cases {
        let problems = parse_readme(markdown).expect_err(markdown);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{markdown:?}: expected a problem containing {expected:?}, got {problems:?}"
        );
    }
}

#[test]
fn described_replicas_reads_the_partition_table() {
    let out = "created topic \"orders\" with 6 partition(s), replication factor 3\n\
               topic: orders  partitions: 2  replication: 3\n\
               PARTITION  LEADER  EPOCH  REPLICAS  ISR    OFFLINE\n\
               0          1       0      1,2,3     1,2,3  \n\
               1          2       0      2,3,1     2,3    \n\
               configs: no overrides (--all-configs shows the defaults)\n";
    assert_eq!(
        described_replicas(out),
        vec![vec!["1", "2", "3"], vec!["2", "3", "1"]]
    );
}
