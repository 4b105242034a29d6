//! `group list | describe | delete | reset-offsets`: consumer group administration through
//! ListGroups (every broker), DescribeGroups, OffsetFetch, DeleteGroups and OffsetCommit at the
//! group's coordinator. Lag is the partition's high watermark minus the committed offset.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use shardlog_client::{
    check_code, codes, Client, ClientError, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};

use crate::cli::{GroupDeleteArgs, GroupDescribeArgs, GroupResetArgs};
use crate::exit::usage;
use crate::membership::{self, decode_assignment, Assignment, PROTOCOL_TYPE};
use crate::output::{print_json, Table};
use crate::Ctx;

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group: String,
    pub protocol_type: String,
    /// Empty when the broker's ListGroups version predates states (v4).
    pub state: String,
}

pub fn list(ctx: &Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let mut groups: BTreeMap<String, ListedGroup> = BTreeMap::new();
    for id in client.broker_ids() {
        let conn = client.connection_to(id)?;
        let response = conn
            .call(&ListGroupsRequest::default())
            .with_context(|| format!("listing groups on broker {id}"))?;
        check_code(response.error_code, None, || {
            format!("listing groups on broker {id}")
        })?;
        for g in response.groups {
            groups.insert(
                g.group_id.0.to_string(),
                ListedGroup {
                    group: g.group_id.0.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    state: g.group_state.to_string(),
                },
            );
        }
    }
    let groups: Vec<ListedGroup> = groups.into_values().collect();
    render_list(&groups, ctx.json, out)
}

pub fn render_list(
    groups: &[ListedGroup],
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json_out {
        return print_json(
            out,
            &Value::Array(
                groups
                    .iter()
                    .map(|g| json!({"group": g.group, "protocol_type": g.protocol_type, "state": g.state}))
                    .collect(),
            ),
        );
    }
    let mut table = Table::new(&["GROUP", "PROTOCOL TYPE", "STATE"]);
    for g in groups {
        table.row(vec![
            g.group.clone(),
            g.protocol_type.clone(),
            if g.state.is_empty() {
                "-".to_string()
            } else {
                g.state.clone()
            },
        ]);
    }
    write!(out, "{}", table.render())?;
    Ok(())
}

/// A member as DescribeGroups reports it, with its assignment decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub assignment: Assignment,
}

/// One partition's offsets in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetView {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub high_watermark: Option<i64>,
    pub member: Option<String>,
}

impl OffsetView {
    pub fn lag(&self) -> Option<i64> {
        match (self.committed, self.high_watermark) {
            (Some(c), Some(h)) => Some((h - c).max(0)),
            _ => None,
        }
    }
}

/// Everything `group describe` shows about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub coordinator: i32,
    pub members: Vec<MemberView>,
    pub offsets: Vec<OffsetView>,
}

/// DescribeGroups for one group at its coordinator.
fn describe_group(
    client: &mut Client,
    group: &str,
) -> anyhow::Result<(i32, String, String, String, Vec<MemberView>)> {
    let req = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let described = client
        .with_coordinator(group, |conn| {
            let r = conn.call(&req)?;
            let g = r
                .groups
                .into_iter()
                .find(|g| *g.group_id.0 == *group)
                .ok_or_else(|| ClientError::Protocol {
                    addr: conn.addr().to_string(),
                    detail: format!("DescribeGroups response has no entry for group {group:?}"),
                })?;
            if g.error_code == codes::NOT_COORDINATOR
                || g.error_code == codes::COORDINATOR_NOT_AVAILABLE
            {
                return Err(ClientError::broker(
                    g.error_code,
                    "describing the group",
                    None,
                ));
            }
            check_code(g.error_code, g.error_message.as_ref(), || {
                format!("describing group {group:?}")
            })?;
            Ok(g)
        })
        .with_context(|| format!("describing group {group:?}"))?;
    let coordinator = client.coordinator_of(group)?;
    let consumer = *described.protocol_type == *PROTOCOL_TYPE;
    let members = described
        .members
        .iter()
        .map(|m| MemberView {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            // Non-consumer groups (Connect, ...) carry assignments in other formats.
            assignment: if consumer {
                decode_assignment(&m.member_assignment).unwrap_or_default()
            } else {
                Assignment::new()
            },
        })
        .collect();
    Ok((
        coordinator,
        described.group_state.to_string(),
        described.protocol_type.to_string(),
        described.protocol_data.to_string(),
        members,
    ))
}

fn high_watermark(client: &mut Client, topic: &str, partition: i32) -> Option<i64> {
    client
        .list_offset(topic, partition, LATEST_TIMESTAMP)
        .ok()
        .map(|o| o.offset)
}

pub fn describe(ctx: &Ctx, a: &GroupDescribeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let mut views = Vec::new();
    for group in &a.groups {
        let (coordinator, state, protocol_type, protocol, members) =
            describe_group(&mut client, group)?;
        let committed = membership::committed_offsets(&mut client, group, None)?;
        if state == "Dead" && committed.is_empty() {
            return Err(ClientError::broker(
                codes::GROUP_ID_NOT_FOUND,
                format!("group {group:?} does not exist"),
                None,
            )
            .into());
        }
        let mut owners: BTreeMap<(String, i32), String> = BTreeMap::new();
        for m in &members {
            for (t, ps) in &m.assignment {
                for p in ps {
                    owners.insert((t.clone(), *p), m.member_id.clone());
                }
            }
        }
        let mut keys: Vec<(String, i32)> = committed.keys().cloned().collect();
        keys.extend(owners.keys().cloned());
        keys.sort();
        keys.dedup();
        let mut offsets = Vec::new();
        for (t, p) in keys {
            offsets.push(OffsetView {
                committed: committed.get(&(t.clone(), p)).copied(),
                high_watermark: high_watermark(&mut client, &t, p),
                member: owners.get(&(t.clone(), p)).cloned(),
                topic: t,
                partition: p,
            });
        }
        views.push(GroupView {
            group: group.clone(),
            state,
            protocol_type,
            protocol,
            coordinator,
            members,
            offsets,
        });
    }
    render_describe(&views, ctx.json, out)
}

fn assignment_text(a: &Assignment) -> String {
    if a.is_empty() {
        return "-".to_string();
    }
    a.iter()
        .map(|(t, ps)| {
            format!(
                "{t}:{}",
                ps.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn render_describe(
    groups: &[GroupView],
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let opt = |o: Option<i64>| o.map_or("-".to_string(), |o| o.to_string());
    if json_out {
        let v: Vec<Value> = groups
            .iter()
            .map(|g| {
                json!({
                    "group": g.group,
                    "state": g.state,
                    "protocol_type": g.protocol_type,
                    "protocol": g.protocol,
                    "coordinator": g.coordinator,
                    "members": g.members.iter().map(|m| json!({
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "host": m.host,
                        "assignment": m.assignment,
                    })).collect::<Vec<_>>(),
                    "offsets": g.offsets.iter().map(|o| json!({
                        "topic": o.topic,
                        "partition": o.partition,
                        "committed": o.committed,
                        "high_watermark": o.high_watermark,
                        "lag": o.lag(),
                        "member": o.member,
                    })).collect::<Vec<_>>(),
                    "total_lag": g.offsets.iter().filter_map(OffsetView::lag).sum::<i64>(),
                })
            })
            .collect();
        return print_json(out, &Value::Array(v));
    }
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(
            out,
            "group: {}  state: {}  protocol: {}/{}  coordinator: {}",
            g.group,
            g.state,
            if g.protocol_type.is_empty() {
                "-"
            } else {
                &g.protocol_type
            },
            if g.protocol.is_empty() {
                "-"
            } else {
                &g.protocol
            },
            g.coordinator
        )?;
        if g.members.is_empty() {
            writeln!(out, "members: none")?;
        } else {
            let mut t = Table::new(&["MEMBER", "CLIENT ID", "HOST", "ASSIGNMENT"]);
            for m in &g.members {
                t.row(vec![
                    m.member_id.clone(),
                    m.client_id.clone(),
                    m.host.clone(),
                    assignment_text(&m.assignment),
                ]);
            }
            write!(out, "{}", t.render())?;
        }
        if g.offsets.is_empty() {
            writeln!(out, "offsets: none committed")?;
        } else {
            let mut t = Table::new(&[
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "HIGH WATERMARK",
                "LAG",
                "MEMBER",
            ]);
            for o in &g.offsets {
                t.row(vec![
                    o.topic.clone(),
                    o.partition.to_string(),
                    opt(o.committed),
                    opt(o.high_watermark),
                    opt(o.lag()),
                    o.member.clone().unwrap_or_else(|| "-".to_string()),
                ]);
            }
            write!(out, "{}", t.render())?;
            writeln!(
                out,
                "total lag: {}",
                g.offsets.iter().filter_map(OffsetView::lag).sum::<i64>()
            )?;
        }
    }
    Ok(())
}

pub fn delete(ctx: &Ctx, a: &GroupDeleteArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let mut rows = Vec::new();
    let mut first_error = None;
    for group in &a.groups {
        let req = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(group.clone()))]);
        let result = client.with_coordinator(group, |conn| {
            let r = conn.call(&req)?;
            let g = r
                .results
                .iter()
                .find(|g| *g.group_id.0 == **group)
                .ok_or_else(|| ClientError::Protocol {
                    addr: conn.addr().to_string(),
                    detail: format!("DeleteGroups response has no result for {group:?}"),
                })?;
            if g.error_code == codes::NOT_COORDINATOR
                || g.error_code == codes::COORDINATOR_NOT_AVAILABLE
            {
                return Err(ClientError::broker(
                    g.error_code,
                    "deleting the group",
                    None,
                ));
            }
            check_code(g.error_code, None, || format!("deleting group {group:?}"))
        });
        match result {
            Ok(()) => rows.push((group.clone(), "deleted")),
            Err(e) => {
                if !ctx.json {
                    eprintln!("group {group:?}: {e}");
                }
                rows.push((group.clone(), "failed"));
                first_error.get_or_insert(e);
            }
        }
    }
    if ctx.json {
        print_json(
            out,
            &Value::Array(
                rows.iter()
                    .map(|(g, s)| json!({"group": g, "status": s}))
                    .collect(),
            ),
        )?;
    } else {
        for (g, s) in &rows {
            if *s != "failed" {
                writeln!(out, "group {g:?}: {s}")?;
            }
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Where `reset-offsets` moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
    ShiftBy(i64),
}

impl ResetTarget {
    pub fn from_args(a: &GroupResetArgs) -> ResetTarget {
        if a.to_earliest {
            ResetTarget::Earliest
        } else if a.to_latest {
            ResetTarget::Latest
        } else if let Some(o) = a.to_offset {
            ResetTarget::Offset(o)
        } else if let Some(t) = a.to_timestamp {
            ResetTarget::Timestamp(t)
        } else {
            ResetTarget::ShiftBy(a.shift_by.unwrap_or(0))
        }
    }
}

/// The new offset for one partition. `at_timestamp` is ListOffsets' answer for a timestamp
/// target (-1: no record that late). Offsets are clamped to [earliest, latest], as Kafka's
/// tool does.
pub fn reset_offset(
    target: ResetTarget,
    current: Option<i64>,
    earliest: i64,
    latest: i64,
    at_timestamp: Option<i64>,
) -> Result<i64, String> {
    let clamp = |o: i64| o.clamp(earliest, latest.max(earliest));
    Ok(match target {
        ResetTarget::Earliest => earliest,
        ResetTarget::Latest => latest,
        ResetTarget::Offset(o) => clamp(o),
        ResetTarget::Timestamp(_) => match at_timestamp {
            Some(o) if o >= 0 => clamp(o),
            _ => latest,
        },
        ResetTarget::ShiftBy(n) => match current {
            Some(c) => clamp(c.saturating_add(n)),
            None => return Err("has no committed offset to shift".to_string()),
        },
    })
}

/// One line of the reset plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedReset {
    pub topic: String,
    pub partition: i32,
    pub current: Option<i64>,
    pub new: i64,
}

pub fn reset_offsets(ctx: &Ctx, a: &GroupResetArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if !a.partition.is_empty() && a.topic.len() != 1 {
        return Err(usage("--partition needs exactly one --topic"));
    }
    let target = ResetTarget::from_args(a);
    let mut client = ctx.connect()?;
    let (_, state, _, _, members) = describe_group(&mut client, &a.group)?;
    let active = !members.is_empty() && state != "Empty" && state != "Dead";
    if active && a.execute {
        return Err(ClientError::broker(
            codes::NON_EMPTY_GROUP,
            format!("resetting the offsets of group {:?}", a.group),
            Some(format!(
                "the group is {state} with {} member(s); offsets can only be reset while it has none",
                members.len()
            )),
        )
        .into());
    }
    let committed = membership::committed_offsets(&mut client, &a.group, None)?;
    let topics: Vec<String> = if a.topic.is_empty() {
        let mut ts: Vec<String> = committed.keys().map(|(t, _)| t.clone()).collect();
        ts.dedup();
        if ts.is_empty() {
            return Err(usage(format!(
                "group {:?} has no committed offsets; name the topics with --topic",
                a.group
            )));
        }
        ts
    } else {
        a.topic.clone()
    };
    let mut plan = Vec::new();
    for topic in &topics {
        let all = client
            .partitions_of(topic)
            .with_context(|| format!("looking up topic {topic:?}"))?;
        let partitions = if a.partition.is_empty() {
            all.clone()
        } else {
            a.partition.clone()
        };
        for p in partitions {
            if !all.contains(&p) {
                return Err(ClientError::broker(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {topic:?} has no partition {p}"),
                    None,
                )
                .into());
            }
            let earliest = client.list_offset(topic, p, EARLIEST_TIMESTAMP)?.offset;
            let latest = client.list_offset(topic, p, LATEST_TIMESTAMP)?.offset;
            let at_timestamp = match target {
                ResetTarget::Timestamp(ts) => Some(client.list_offset(topic, p, ts)?.offset),
                _ => None,
            };
            let current = committed.get(&(topic.clone(), p)).copied();
            let new = reset_offset(target, current, earliest, latest, at_timestamp)
                .map_err(|e| anyhow::anyhow!("{topic}-{p} {e}; use another --to-* option"))?;
            plan.push(PlannedReset {
                topic: topic.clone(),
                partition: p,
                current,
                new,
            });
        }
    }
    if a.execute {
        let offsets = plan
            .iter()
            .map(|r| ((r.topic.clone(), r.partition), r.new))
            .collect();
        membership::commit_offsets(&mut client, &a.group, -1, "", &offsets)?;
    }
    render_reset(&a.group, &plan, a.execute, active, ctx.json, out)
}

pub fn render_reset(
    group: &str,
    plan: &[PlannedReset],
    executed: bool,
    active: bool,
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json_out {
        return print_json(
            out,
            &json!({
                "group": group,
                "executed": executed,
                "partitions": plan.iter().map(|r| json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "current": r.current,
                    "new": r.new,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    let mut t = Table::new(&["TOPIC", "PARTITION", "CURRENT", "NEW"]);
    for r in plan {
        t.row(vec![
            r.topic.clone(),
            r.partition.to_string(),
            r.current.map_or("-".to_string(), |c| c.to_string()),
            r.new.to_string(),
        ]);
    }
    write!(out, "{}", t.render())?;
    if executed {
        writeln!(out, "offsets of group {group:?} reset")?;
    } else {
        writeln!(out, "dry run: nothing changed; add --execute to apply")?;
        if active {
            writeln!(
                out,
                "note: the group has active members; stop them before --execute"
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_clamp_to_the_log() {
        use ResetTarget::*;
        assert_eq!(reset_offset(Earliest, Some(5), 2, 9, None), Ok(2));
        assert_eq!(reset_offset(Latest, None, 2, 9, None), Ok(9));
        assert_eq!(reset_offset(Offset(100), None, 2, 9, None), Ok(9));
        assert_eq!(reset_offset(Offset(0), None, 2, 9, None), Ok(2));
        assert_eq!(reset_offset(Offset(4), None, 2, 9, None), Ok(4));
        assert_eq!(reset_offset(Timestamp(1), None, 2, 9, Some(6)), Ok(6));
        assert_eq!(reset_offset(Timestamp(1), None, 2, 9, Some(-1)), Ok(9));
        assert_eq!(reset_offset(ShiftBy(-10), Some(5), 2, 9, None), Ok(2));
        assert_eq!(reset_offset(ShiftBy(3), Some(5), 2, 9, None), Ok(8));
        assert!(reset_offset(ShiftBy(3), None, 2, 9, None).is_err());
    }

    #[test]
    fn lag_is_high_watermark_minus_committed() {
        let o = OffsetView {
            topic: "t".into(),
            partition: 0,
            committed: Some(7),
            high_watermark: Some(10),
            member: None,
        };
        assert_eq!(o.lag(), Some(3));
        assert_eq!(
            OffsetView {
                committed: None,
                ..o.clone()
            }
            .lag(),
            None
        );
        assert_eq!(
            OffsetView {
                committed: Some(12),
                ..o
            }
            .lag(),
            Some(0)
        );
    }

    #[test]
    fn describe_renders_members_offsets_and_lag() {
        let mut assignment = Assignment::new();
        assignment.insert("t".into(), vec![0, 1]);
        let g = GroupView {
            group: "g".into(),
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            coordinator: 0,
            members: vec![MemberView {
                member_id: "m-1".into(),
                client_id: "c".into(),
                host: "/127.0.0.1".into(),
                assignment,
            }],
            offsets: vec![
                OffsetView {
                    topic: "t".into(),
                    partition: 0,
                    committed: Some(3),
                    high_watermark: Some(5),
                    member: Some("m-1".into()),
                },
                OffsetView {
                    topic: "t".into(),
                    partition: 1,
                    committed: None,
                    high_watermark: Some(4),
                    member: Some("m-1".into()),
                },
            ],
        };
        let mut out = Vec::new();
        render_describe(std::slice::from_ref(&g), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("group: g  state: Stable  protocol: consumer/range  coordinator: 0\n"),
            "{text}"
        );
        assert!(
            text.contains("m-1     c          /127.0.0.1  t:0,1"),
            "{text}"
        );
        assert!(
            text.contains("t      0          3          5               2    m-1"),
            "{text}"
        );
        assert!(
            text.contains("t      1          -          4               -    m-1"),
            "{text}"
        );
        assert!(text.ends_with("total lag: 2\n"), "{text}");

        let mut out = Vec::new();
        render_describe(&[g], true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["total_lag"], 2);
        assert_eq!(v[0]["members"][0]["assignment"]["t"][1], 1);
        assert_eq!(v[0]["offsets"][1]["lag"], Value::Null);
    }

    #[test]
    fn reset_plan_says_whether_it_was_applied() {
        let plan = vec![PlannedReset {
            topic: "t".into(),
            partition: 0,
            current: Some(4),
            new: 0,
        }];
        let mut out = Vec::new();
        render_reset("g", &plan, false, true, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("t      0          4        0"), "{text}");
        assert!(
            text.contains("dry run: nothing changed; add --execute to apply"),
            "{text}"
        );
        assert!(text.contains("stop them before --execute"), "{text}");
        let mut out = Vec::new();
        render_reset("g", &plan, true, false, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["executed"], true);
        assert_eq!(v["partitions"][0]["new"], 0);
    }

    #[test]
    fn group_list_table() {
        let groups = vec![
            ListedGroup {
                group: "a".into(),
                protocol_type: "consumer".into(),
                state: "Stable".into(),
            },
            ListedGroup {
                group: "b".into(),
                protocol_type: "".into(),
                state: "".into(),
            },
        ];
        let mut out = Vec::new();
        render_list(&groups, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GROUP  PROTOCOL TYPE  STATE\na      consumer       Stable\nb                     -\n"
        );
    }

    #[test]
    fn describe_and_reset_against_a_fake_coordinator() {
        use clap::Parser;
        let fake = shardlog_client::fake_broker::FakeBroker::with_topics(&[("t", 2)], 10);
        let ctx = Ctx {
            entity_client_id: None,
            bootstrap: fake.addr.clone(),
            timeout: std::time::Duration::from_secs(5),
            client_id: "test".into(),
            json: true,
        };
        let mut client = ctx.connect().unwrap();
        let offsets = [(("t".to_string(), 0), 4)].into_iter().collect();
        membership::commit_offsets(&mut client, "g", -1, "", &offsets).unwrap();

        let mut out = Vec::new();
        describe(
            &ctx,
            &GroupDescribeArgs {
                groups: vec!["g".into()],
            },
            &mut out,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["state"], "Empty");
        assert_eq!(v[0]["offsets"][0]["high_watermark"], 10);
        assert_eq!(v[0]["total_lag"], 6);

        let parse = |args: &[&str]| {
            let cli = crate::cli::Cli::try_parse_from(
                ["shardlog-cli", "group", "reset-offsets", "g", "-t", "t"]
                    .iter()
                    .chain(args)
                    .copied(),
            )
            .unwrap();
            match cli.command {
                crate::cli::Command::Group(crate::cli::GroupCommand::ResetOffsets(a)) => a,
                _ => unreachable!("parsed reset-offsets"),
            }
        };
        // A dry run commits nothing.
        let mut out = Vec::new();
        reset_offsets(&ctx, &parse(&["--to-latest"]), &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["executed"], false);
        assert_eq!(v["partitions"][0]["current"], 4);
        assert_eq!(v["partitions"][1]["current"], Value::Null);
        assert_eq!(v["partitions"][1]["new"], 10);
        assert_eq!(fake.state.lock().unwrap().group("g").committed.len(), 1);
        // --execute does.
        let mut out = Vec::new();
        reset_offsets(&ctx, &parse(&["--to-offset", "3", "--execute"]), &mut out).unwrap();
        let committed = fake.state.lock().unwrap().group("g").committed.clone();
        assert_eq!(committed.values().copied().collect::<Vec<_>>(), vec![3, 3]);
        // Shifting a partition without a committed offset is refused, naming it.
        fake.state
            .lock()
            .unwrap()
            .group("g")
            .committed
            .remove(&("t".to_string(), 1));
        let err = reset_offsets(&ctx, &parse(&["--shift-by", "1"]), &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("t-1 has no committed offset"),
            "{err}"
        );
    }
}
