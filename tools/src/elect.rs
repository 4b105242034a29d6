//! `cluster elect-leaders`: asks the controller to elect partition leaders (ElectLeaders), as
//! Kafka's `kafka-leader-election.sh` does. Preferred election (type 0) moves leadership back
//! to each partition's first replica; unclean election (type 1, `--unclean`) lets an
//! out-of-sync replica lead when no in-sync one is alive.
//!
//! Planning (which partitions), request building and rendering are pure functions; only `run`
//! talks to brokers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use kafka_protocol::messages::{
    elect_leaders_request::TopicPartitions, ElectLeadersRequest, ElectLeadersResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes, VersionRange};
use serde_json::{json, Value};
use shardlog_client::{check_code, client_versions, codes, error_name, ClientError, Connection};

use crate::cli::ElectLeadersArgs;
use crate::output::{print_json, Table};
use crate::Ctx;

/// ElectLeaders `election_type`: the preferred (first) replica.
pub const PREFERRED: i8 = 0;
/// ElectLeaders `election_type`: any live replica, even one out of sync.
pub const UNCLEAN: i8 = 1;
/// The partition already has its preferred leader.
pub const ELECTION_NOT_NEEDED: i16 = codes::ELECTION_NOT_NEEDED;
/// Election timeout sent when the command has none.
pub const DEFAULT_TIMEOUT_MS: i32 = 30_000;
/// How much longer than the election timeout the tool waits for the answer, so that a
/// controller that runs out of time can still report which partitions timed out.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// The partitions of one topic that the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// Every partition (the count comes from Metadata).
    Every,
    Only(BTreeSet<i32>),
}

/// What the command line asks for: `None` for every partition of every topic (`--all`).
pub type Selection = Option<BTreeMap<String, Wanted>>;

/// Partitions to elect, by topic, after looking up the topics given without partitions.
pub type Targets = BTreeMap<String, Vec<i32>>;

/// The partitions named by `--all`, `--topic` and `--partition`. A bare `--partition P` needs
/// exactly one `--topic`; `TOPIC:P` stands alone. A `--topic` without bare partitions means
/// all of its partitions.
pub fn selection(a: &ElectLeadersArgs) -> Result<Selection, String> {
    if a.all {
        return Ok(None);
    }
    let bare: BTreeSet<i32> = a
        .partition
        .iter()
        .filter(|p| p.topic.is_none())
        .map(|p| p.partition)
        .collect();
    let mut wanted = BTreeMap::new();
    if !bare.is_empty() {
        let [topic] = a.topic.as_slice() else {
            return Err(format!(
                "--partition P needs exactly one --topic (got {}); write --partition TOPIC:P to \
                 name partitions of several topics",
                a.topic.len()
            ));
        };
        wanted.insert(topic.clone(), Wanted::Only(bare));
    } else {
        for topic in &a.topic {
            wanted.insert(topic.clone(), Wanted::Every);
        }
    }
    for p in &a.partition {
        let Some(topic) = &p.topic else { continue };
        match wanted
            .entry(topic.clone())
            .or_insert_with(|| Wanted::Only(BTreeSet::new()))
        {
            Wanted::Every => {}
            Wanted::Only(set) => {
                set.insert(p.partition);
            }
        }
    }
    if wanted.is_empty() {
        return Err("name partitions with --topic or --partition, or pass --all".to_string());
    }
    Ok(Some(wanted))
}

/// The ElectLeaders request: `targets` `None` asks for every partition (a null list).
pub fn build_request(
    election_type: i8,
    targets: Option<&Targets>,
    timeout_ms: i32,
) -> ElectLeadersRequest {
    ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_timeout_ms(timeout_ms)
        .with_topic_partitions(targets.map(|t| {
            t.iter()
                .map(|(topic, partitions)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(partitions.clone())
                })
                .collect()
        }))
}

/// The election timeout for the request: the command's request timeout in milliseconds
/// (capped to what the field holds), [`DEFAULT_TIMEOUT_MS`] when there is none.
pub fn timeout_ms(timeout: Duration) -> i32 {
    match timeout.as_millis() {
        0 => DEFAULT_TIMEOUT_MS,
        ms => i32::try_from(ms).unwrap_or(i32::MAX),
    }
}

/// The version to send: the highest both sides speak, which must be 1 or newer for an unclean
/// election (v0 has no `election_type` and always means preferred).
pub fn version_for(conn: &Connection, election_type: i8) -> Result<i16, ClientError> {
    let version = conn.version_for::<ElectLeadersRequest>()?;
    if election_type != PREFERRED && version < 1 {
        let ours = client_versions::<ElectLeadersRequest>();
        return Err(ClientError::UnsupportedApi {
            addr: conn.addr().to_string(),
            api: "ElectLeaders with an unclean election (v1+)".to_string(),
            broker_versions: conn
                .api_versions()
                .get(&ElectLeadersRequest::KEY)
                .map_or_else(|| "none".to_string(), ToString::to_string),
            client_versions: VersionRange {
                min: 1,
                max: ours.max,
            }
            .to_string(),
        });
    }
    Ok(version)
}

/// The controller's answer for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub message: Option<String>,
}

impl ElectionResult {
    /// Elected, or nothing to do (the preferred replica already leads).
    pub fn succeeded(&self) -> bool {
        self.error_code == codes::NONE || self.error_code == ELECTION_NOT_NEEDED
    }

    /// The RESULT column: `elected`, `not needed`, or the error's name and message.
    pub fn outcome(&self) -> String {
        match self.error_code {
            codes::NONE => "elected".to_string(),
            ELECTION_NOT_NEEDED => "not needed".to_string(),
            code => match &self.message {
                Some(m) => format!("{}: {m}", error_name(code)),
                None => error_name(code),
            },
        }
    }
}

/// The per-partition results of a response, ordered by topic and partition.
pub fn results_of(response: &ElectLeadersResponse) -> Vec<ElectionResult> {
    let mut results: Vec<ElectionResult> = response
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result.iter().map(|p| ElectionResult {
                topic: t.topic.0.to_string(),
                partition: p.partition_id,
                error_code: p.error_code,
                message: p
                    .error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .filter(|m| !m.is_empty()),
            })
        })
        .collect();
    results.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    results
}

/// The sentence printed instead of a table when no partition was elected and none failed:
/// the controller answered for no partition (with `--all` it leaves out the partitions that
/// need nothing), or every answer is "not needed". `None` when there is a table to show.
pub fn nothing_to_do(results: &[ElectionResult], election_type: i8) -> Option<String> {
    if !results.iter().all(|r| r.error_code == ELECTION_NOT_NEEDED) {
        return None;
    }
    let why = match (election_type, results.len()) {
        (UNCLEAN, 0) => "every partition has a leader".to_string(),
        (_, 0) => "every partition is led by its preferred replica".to_string(),
        (UNCLEAN, n) => format!("all {n} partition(s) asked for have a leader"),
        (_, n) => format!("the preferred replica already leads all {n} partition(s) asked for"),
    };
    Some(format!("no partition needed a leader election: {why}"))
}

/// Prints the results as a `TOPIC PARTITION RESULT` table (a sentence instead when there was
/// nothing to do, see [`nothing_to_do`]), or as a JSON array of
/// `{topic, partition, error_code, error, message}` (`error` is null for code 0; an empty
/// array when the controller answered for no partition).
pub fn render(
    results: &[ElectionResult],
    election_type: i8,
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json_out {
        return print_json(
            out,
            &Value::Array(
                results
                    .iter()
                    .map(|r| {
                        json!({
                            "topic": r.topic,
                            "partition": r.partition,
                            "error_code": r.error_code,
                            "error": (r.error_code != codes::NONE).then(|| error_name(r.error_code)),
                            "message": r.message,
                        })
                    })
                    .collect(),
            ),
        );
    }
    if let Some(sentence) = nothing_to_do(results, election_type) {
        writeln!(out, "{sentence}")?;
        return Ok(());
    }
    let mut table = Table::new(&["TOPIC", "PARTITION", "RESULT"]);
    for r in results {
        table.row(vec![r.topic.clone(), r.partition.to_string(), r.outcome()]);
    }
    write!(out, "{}", table.render())?;
    Ok(())
}

/// The error to exit with when some partition failed: the first failure, with a count.
pub fn failure(results: &[ElectionResult]) -> Option<ClientError> {
    let failed: Vec<&ElectionResult> = results.iter().filter(|r| !r.succeeded()).collect();
    let first = failed.first()?;
    Some(ClientError::broker(
        first.error_code,
        format!(
            "for {}-{} ({} of {} partition(s) failed)",
            first.topic,
            first.partition,
            failed.len(),
            results.len()
        ),
        first.message.clone(),
    ))
}

pub fn run(ctx: &Ctx, a: &ElectLeadersArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let wanted = selection(a).map_err(crate::exit::usage)?;
    let election_type = if a.unclean { UNCLEAN } else { PREFERRED };
    let mut client = ctx.connect()?;
    let targets: Option<Targets> = match wanted {
        None => None,
        Some(wanted) => {
            let mut targets = Targets::new();
            for (topic, w) in wanted {
                let partitions = match w {
                    Wanted::Only(set) => set.into_iter().collect(),
                    Wanted::Every => client
                        .partitions_of(&topic)
                        .with_context(|| format!("looking up topic {topic:?}"))?,
                };
                targets.insert(topic, partitions);
            }
            Some(targets)
        }
    };
    let req = build_request(election_type, targets.as_ref(), timeout_ms(ctx.timeout));
    let response = client
        .with_controller(|conn| {
            let version = version_for(conn, election_type)?;
            conn.set_timeout(ctx.timeout + ANSWER_MARGIN)?;
            let response = conn.call_at(&req, version)?;
            check_code(response.error_code, None, || {
                format!("from the controller at {}", conn.addr())
            })?;
            Ok(response)
        })
        .context("electing leaders")?;
    let results = results_of(&response);
    render(&results, election_type, ctx.json, out)?;
    match failure(&results) {
        Some(e) => Err(anyhow::Error::new(e).context("electing leaders")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::PartitionRef;
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };

    fn args(all: bool, topics: &[&str], partitions: &[(Option<&str>, i32)]) -> ElectLeadersArgs {
        ElectLeadersArgs {
            all,
            topic: topics.iter().map(|t| t.to_string()).collect(),
            partition: partitions
                .iter()
                .map(|(t, p)| PartitionRef {
                    topic: t.map(str::to_string),
                    partition: *p,
                })
                .collect(),
            unclean: false,
        }
    }

    fn only(ps: &[i32]) -> Wanted {
        Wanted::Only(ps.iter().copied().collect())
    }

    fn result(topic: &str, partition: i32, code: i16, message: Option<&str>) -> ElectionResult {
        ElectionResult {
            topic: topic.into(),
            partition,
            error_code: code,
            message: message.map(str::to_string),
        }
    }

    #[test]
    fn selection_follows_the_flags() {
        assert_eq!(selection(&args(true, &[], &[])), Ok(None));
        let s = selection(&args(false, &["a", "b"], &[])).unwrap().unwrap();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            vec![("a".into(), Wanted::Every), ("b".into(), Wanted::Every)]
        );
        let s = selection(&args(
            false,
            &["a"],
            &[(None, 2), (None, 0), (Some("c"), 1)],
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            vec![("a".into(), only(&[0, 2])), ("c".into(), only(&[1]))]
        );
        // A whole topic absorbs TOPIC:P of the same topic; TOPIC:P alone needs no --topic.
        let s = selection(&args(false, &["a"], &[(Some("a"), 1), (Some("b"), 3)]))
            .unwrap()
            .unwrap();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            vec![("a".into(), Wanted::Every), ("b".into(), only(&[3]))]
        );
        let e = selection(&args(false, &[], &[(None, 1)])).unwrap_err();
        assert!(e.contains("exactly one --topic"), "{e}");
        assert!(selection(&args(false, &["a", "b"], &[(None, 1)])).is_err());
        assert!(selection(&args(false, &[], &[])).is_err());
    }

    #[test]
    fn request_lists_partitions_or_null_for_all() {
        let targets: Targets = [("a".to_string(), vec![0, 1]), ("b".to_string(), vec![2])]
            .into_iter()
            .collect();
        let req = build_request(UNCLEAN, Some(&targets), 1234);
        assert_eq!(req.election_type, 1);
        assert_eq!(req.timeout_ms, 1234);
        let tps = req.topic_partitions.expect("a list");
        assert_eq!(tps.len(), 2);
        assert_eq!(&*tps[0].topic.0, "a");
        assert_eq!(tps[0].partitions, vec![0, 1]);
        assert_eq!(tps[1].partitions, vec![2]);
        let req = build_request(PREFERRED, None, 5);
        assert_eq!(req.election_type, 0);
        assert!(req.topic_partitions.is_none());
        assert_eq!(timeout_ms(Duration::from_millis(10_000)), 10_000);
        assert_eq!(timeout_ms(Duration::ZERO), DEFAULT_TIMEOUT_MS);
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX / 2)), i32::MAX);
    }

    #[test]
    fn response_results_are_flattened_and_sorted() {
        let response = ElectLeadersResponse::default().with_replica_election_results(vec![
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_static_str("b")))
                .with_partition_result(vec![PartitionResult::default()
                    .with_partition_id(0)
                    .with_error_code(80)
                    .with_error_message(Some(StrBytes::from_static_str("")))]),
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_static_str("a")))
                .with_partition_result(vec![
                    PartitionResult::default()
                        .with_partition_id(1)
                        .with_error_code(84)
                        .with_error_message(Some(StrBytes::from_static_str("already"))),
                    PartitionResult::default().with_partition_id(0),
                ]),
        ]);
        assert_eq!(
            results_of(&response),
            vec![
                result("a", 0, 0, None),
                result("a", 1, 84, Some("already")),
                result("b", 0, 80, None),
            ]
        );
    }

    #[test]
    fn table_names_each_outcome() {
        let results = vec![
            result("orders", 0, 0, None),
            result("orders", 1, 84, Some("Leader election not needed")),
            result("orders", 2, 80, Some("replica 3 is not in sync")),
            result("payments", 0, 83, None),
            result("nope", 7, 3, None),
        ];
        let mut out = Vec::new();
        render(&results, PREFERRED, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TOPIC     PARTITION  RESULT\n\
             orders    0          elected\n\
             orders    1          not needed\n\
             orders    2          PREFERRED_LEADER_NOT_AVAILABLE: replica 3 is not in sync\n\
             payments  0          ELIGIBLE_LEADERS_NOT_AVAILABLE\n\
             nope      7          UNKNOWN_TOPIC_OR_PARTITION\n"
        );
    }

    #[test]
    fn nothing_to_do_is_a_sentence_in_text_and_an_empty_array_in_json() {
        let text = |results: &[ElectionResult], election_type| {
            let mut out = Vec::new();
            render(results, election_type, false, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            text(&[], PREFERRED),
            "no partition needed a leader election: every partition is led by its preferred \
             replica\n"
        );
        assert_eq!(
            text(&[], UNCLEAN),
            "no partition needed a leader election: every partition has a leader\n"
        );
        let not_needed = vec![
            result("t", 0, ELECTION_NOT_NEEDED, None),
            result("t", 1, ELECTION_NOT_NEEDED, Some("already")),
        ];
        assert_eq!(
            text(&not_needed, PREFERRED),
            "no partition needed a leader election: the preferred replica already leads all 2 \
             partition(s) asked for\n"
        );
        assert_eq!(
            text(&not_needed, UNCLEAN),
            "no partition needed a leader election: all 2 partition(s) asked for have a leader\n"
        );
        // One election or one failure is worth the table.
        let mixed = vec![
            result("t", 0, 0, None),
            result("t", 1, ELECTION_NOT_NEEDED, None),
        ];
        assert!(text(&mixed, PREFERRED).starts_with("TOPIC"));
        assert!(nothing_to_do(&[result("t", 0, 83, None)], PREFERRED).is_none());
        let mut out = Vec::new();
        render(&[], PREFERRED, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!([]));
    }

    #[test]
    fn json_has_code_name_and_message() {
        let results = vec![result("t", 0, 0, None), result("t", 1, 42, Some("bad"))];
        let mut out = Vec::new();
        render(&results, PREFERRED, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!([
                {"topic": "t", "partition": 0, "error_code": 0, "error": null, "message": null},
                {"topic": "t", "partition": 1, "error_code": 42, "error": "INVALID_REQUEST",
                 "message": "bad"},
            ])
        );
    }

    #[test]
    fn only_real_failures_fail_the_command() {
        let ok = vec![result("t", 0, 0, None), result("t", 1, 84, None)];
        assert!(failure(&ok).is_none());
        assert!(failure(&[]).is_none());
        let bad = vec![
            result("t", 0, 0, None),
            result("t", 1, 83, Some("no live replica")),
            result("t", 2, 3, None),
        ];
        let e = failure(&bad).expect("a failure");
        assert_eq!(e.code(), Some(83));
        let text = e.to_string();
        assert!(text.contains("t-1 (2 of 3 partition(s) failed)"), "{text}");
        assert!(text.ends_with(": no live replica"), "{text}");
        assert_eq!(
            crate::exit::status_of(&anyhow::Error::new(e)),
            crate::exit::BROKER
        );
    }

    mod through_fake_broker {
        use super::*;
        use kafka_protocol::messages::ApiKey;
        use shardlog_client::fake_broker::FakeBroker;

        fn ctx(fake: &FakeBroker, json: bool) -> Ctx {
            Ctx {
                entity_client_id: None,
                bootstrap: fake.addr.clone(),
                timeout: Duration::from_secs(5),
                client_id: "test".into(),
                json,
            }
        }

        fn run_with(ctx: &Ctx, a: &ElectLeadersArgs) -> (String, anyhow::Result<()>) {
            let mut out = Vec::new();
            let r = run(ctx, a, &mut out);
            (String::from_utf8(out).unwrap(), r)
        }

        #[test]
        fn a_topic_asks_for_each_of_its_partitions_at_the_newest_version() {
            let fake = FakeBroker::with_topics(&[("t", 3), ("other", 1)], 0);
            fake.state.lock().unwrap().elect_results.insert(
                ("t".into(), 1),
                (ELECTION_NOT_NEEDED, Some("already the leader".into())),
            );
            let mut a = args(false, &["t"], &[(Some("other"), 5)]);
            a.unclean = true;
            let (text, r) = run_with(&ctx(&fake, false), &a);
            assert_eq!(
                text,
                "TOPIC  PARTITION  RESULT\n\
                 other  5          UNKNOWN_TOPIC_OR_PARTITION: no such partition\n\
                 t      0          elected\n\
                 t      1          not needed\n\
                 t      2          elected\n"
            );
            let e = r.unwrap_err();
            assert_eq!(crate::exit::status_of(&e), crate::exit::BROKER);
            assert!(
                format!("{e:#}").contains("other-5 (1 of 4 partition(s) failed)"),
                "{e:#}"
            );
            let st = fake.state.lock().unwrap();
            let [(version, req)] = st.elect_requests.as_slice() else {
                panic!("expected one ElectLeaders request: {:?}", st.elect_requests)
            };
            assert_eq!(*version, 2);
            assert_eq!(req.election_type, UNCLEAN);
            assert_eq!(req.timeout_ms, 5_000);
            let asked: Vec<(String, Vec<i32>)> = req
                .topic_partitions
                .as_ref()
                .expect("a list")
                .iter()
                .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
                .collect();
            assert_eq!(
                asked,
                vec![("other".into(), vec![5]), ("t".into(), vec![0, 1, 2])]
            );
        }

        #[test]
        fn all_sends_null_and_succeeds_when_nothing_failed() {
            let fake = FakeBroker::with_topics(&[("t", 2)], 0);
            fake.state
                .lock()
                .unwrap()
                .elect_results
                .insert(("t".into(), 0), (ELECTION_NOT_NEEDED, None));
            let (text, r) = run_with(&ctx(&fake, true), &args(true, &[], &[]));
            r.unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v[0]["error"], "ELECTION_NOT_NEEDED");
            assert_eq!(v[1]["error_code"], 0);
            let st = fake.state.lock().unwrap();
            assert_eq!(st.elect_requests.len(), 1);
            assert!(st.elect_requests[0].1.topic_partitions.is_none());
            assert_eq!(st.elect_requests[0].1.election_type, PREFERRED);
        }

        #[test]
        fn nothing_to_do_says_so() {
            let fake = FakeBroker::with_topics(&[("t", 2)], 0);
            for p in 0..2 {
                fake.state
                    .lock()
                    .unwrap()
                    .elect_results
                    .insert(("t".into(), p), (ELECTION_NOT_NEEDED, None));
            }
            let (text, r) = run_with(&ctx(&fake, false), &args(false, &["t"], &[]));
            r.unwrap();
            assert_eq!(
                text,
                "no partition needed a leader election: the preferred replica already leads \
                 all 2 partition(s) asked for\n"
            );
            // The JSON keeps one entry per partition the controller answered for.
            let (text, r) = run_with(&ctx(&fake, true), &args(false, &["t"], &[]));
            r.unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v.as_array().map(Vec::len), Some(2));
        }

        #[test]
        fn a_top_level_error_fails_without_a_table() {
            let fake = FakeBroker::with_topics(&[("t", 1)], 0);
            fake.state.lock().unwrap().elect_error = 31; // CLUSTER_AUTHORIZATION_FAILED
            let (text, r) = run_with(&ctx(&fake, false), &args(false, &["t"], &[]));
            assert_eq!(text, "");
            let e = r.unwrap_err();
            assert_eq!(crate::exit::status_of(&e), crate::exit::BROKER);
            assert!(
                format!("{e:#}").contains("CLUSTER_AUTHORIZATION_FAILED (31)"),
                "{e:#}"
            );
        }

        #[test]
        fn a_v0_broker_gets_v0_and_refuses_unclean() {
            let fake = FakeBroker::with_topics(&[("t", 1)], 0);
            fake.state
                .lock()
                .unwrap()
                .max_versions
                .insert(ApiKey::ElectLeaders as i16, 0);
            let (text, r) = run_with(&ctx(&fake, false), &args(false, &["t"], &[]));
            r.unwrap();
            assert_eq!(
                text,
                "TOPIC  PARTITION  RESULT\nt      0          elected\n"
            );
            assert_eq!(fake.state.lock().unwrap().elect_requests[0].0, 0);

            let mut a = args(false, &["t"], &[]);
            a.unclean = true;
            let (text, r) = run_with(&ctx(&fake, false), &a);
            assert_eq!(text, "");
            let e = r.unwrap_err();
            assert_eq!(crate::exit::status_of(&e), crate::exit::BROKER);
            assert!(format!("{e:#}").contains("unclean"), "{e:#}");
            assert_eq!(fake.state.lock().unwrap().elect_requests.len(), 1);
        }

        #[test]
        fn an_unknown_topic_fails_before_electing() {
            let fake = FakeBroker::with_topics(&[("t", 1)], 0);
            let (_, r) = run_with(&ctx(&fake, false), &args(false, &["missing"], &[]));
            let e = r.unwrap_err();
            assert_eq!(crate::exit::status_of(&e), crate::exit::BROKER);
            assert!(fake.state.lock().unwrap().elect_requests.is_empty());
        }
    }
}
