//! Znode paths and their JSON, as Kafka's ZooKeeper era laid them out (`kafka.zk.ZkData`), so an
//! operator who knows Kafka can read the tree with `zkCli.sh`. Pure: no I/O, no runtime.
//!
//! Every decoder accepts what Kafka writes (extra fields are ignored) and returns an error for
//! malformed data instead of panicking: znodes may have been written by other tools.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::base::ids::{BrokerId, PartitionId, ProducerId};
use crate::cluster::metadata::BrokerInfo;

pub const BROKERS: &str = "/brokers";
pub const BROKER_IDS: &str = "/brokers/ids";
pub const BROKER_TOPICS: &str = "/brokers/topics";
pub const CONFIG: &str = "/config";
pub const CONFIG_TOPICS: &str = "/config/topics";
/// Client quotas by client id: `/config/clients/<id>` (`<default>` for the default).
pub const CONFIG_CLIENTS: &str = "/config/clients";
/// Client quotas by user: `/config/users/<user>` and `/config/users/<user>/clients/<id>`.
pub const CONFIG_USERS: &str = "/config/users";
pub const CONTROLLER: &str = "/controller";
pub const CONTROLLER_EPOCH: &str = "/controller_epoch";
pub const CLUSTER_ID: &str = "/cluster/id";
pub const LATEST_PRODUCER_ID_BLOCK: &str = "/latest_producer_id_block";

/// Persistent znodes every broker makes sure exist before registering (Kafka creates the same).
pub const PERSISTENT_PATHS: [&str; 6] = [
    BROKER_IDS,
    BROKER_TOPICS,
    CONFIG_TOPICS,
    CONFIG_CLIENTS,
    CONFIG_USERS,
    "/cluster",
];

pub fn broker_path(id: BrokerId) -> String {
    format!("{BROKER_IDS}/{id}")
}

pub fn topic_path(topic: &str) -> String {
    format!("{BROKER_TOPICS}/{topic}")
}

pub fn partitions_path(topic: &str) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions")
}

pub fn partition_path(topic: &str, partition: PartitionId) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions/{partition}")
}

pub fn state_path(topic: &str, partition: PartitionId) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions/{partition}/state")
}

pub fn topic_config_path(topic: &str) -> String {
    format!("{CONFIG_TOPICS}/{topic}")
}

/// A znode whose content could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("znode {what}: {reason}")]
pub struct BadZnode {
    pub what: &'static str,
    pub reason: String,
}

fn parse<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T, BadZnode> {
    serde_json::from_slice(bytes).map_err(|e| BadZnode {
        what,
        reason: e.to_string(),
    })
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing maps with string keys and plain numbers cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// `/brokers/ids/<id>` (Kafka's version 4 registration: host, port and the listener list).
#[derive(Debug, Serialize, Deserialize)]
struct BrokerRegistration {
    version: i32,
    host: Option<String>,
    port: i32,
    jmx_port: i32,
    timestamp: String,
    endpoints: Vec<String>,
    listener_security_protocol_map: BTreeMap<String, String>,
}

pub fn encode_broker(host: &str, port: u16, timestamp_ms: i64) -> Vec<u8> {
    let mut protocols = BTreeMap::new();
    protocols.insert("PLAINTEXT".to_string(), "PLAINTEXT".to_string());
    to_json(&BrokerRegistration {
        version: 4,
        host: Some(host.to_string()),
        port: port as i32,
        jmx_port: -1,
        timestamp: timestamp_ms.to_string(),
        endpoints: vec![format!("PLAINTEXT://{host}:{port}")],
        listener_security_protocol_map: protocols,
    })
}

pub fn decode_broker(id: BrokerId, bytes: &[u8]) -> Result<BrokerInfo, BadZnode> {
    #[derive(Deserialize)]
    struct Registration {
        host: Option<String>,
        port: Option<i32>,
        #[serde(default)]
        endpoints: Vec<String>,
    }
    let r: Registration = parse("broker registration", bytes)?;
    let bad = |reason: &str| BadZnode {
        what: "broker registration",
        reason: reason.to_string(),
    };
    if let (Some(host), Some(port)) = (r.host, r.port) {
        if let Ok(port) = u16::try_from(port) {
            return Ok(BrokerInfo { id, host, port });
        }
    }
    // Kafka writes host null when there is no PLAINTEXT listener; take the first endpoint.
    let endpoint = r
        .endpoints
        .first()
        .ok_or_else(|| bad("no host and no endpoints"))?;
    let address = endpoint
        .split_once("://")
        .map(|(_, a)| a)
        .ok_or_else(|| bad("endpoint without a protocol"))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| bad("endpoint without a port"))?;
    let port = port.parse().map_err(|_| bad("endpoint with a bad port"))?;
    Ok(BrokerInfo {
        id,
        host: host.trim_matches(['[', ']']).to_string(),
        port,
    })
}

/// `/controller`: `{"version":1,"brokerid":N,"timestamp":"ms"}`.
pub fn encode_controller(broker: BrokerId, timestamp_ms: i64) -> Vec<u8> {
    to_json(&serde_json::json!({
        "version": 1,
        "brokerid": broker,
        "timestamp": timestamp_ms.to_string(),
    }))
}

pub fn decode_controller(bytes: &[u8]) -> Result<BrokerId, BadZnode> {
    #[derive(Deserialize)]
    struct Controller {
        brokerid: BrokerId,
    }
    Ok(parse::<Controller>("controller", bytes)?.brokerid)
}

/// `/controller_epoch`: the number as text.
pub fn encode_controller_epoch(epoch: i32) -> Vec<u8> {
    epoch.to_string().into_bytes()
}

pub fn decode_controller_epoch(bytes: &[u8]) -> Result<i32, BadZnode> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| BadZnode {
            what: "controller epoch",
            reason: format!("not a number: {:?}", String::from_utf8_lossy(bytes)),
        })
}

/// `/cluster/id`: `{"version":"1","id":"..."}` (Kafka writes the version as a string here).
pub fn encode_cluster_id(id: &str) -> Vec<u8> {
    to_json(&serde_json::json!({"version": "1", "id": id}))
}

pub fn decode_cluster_id(bytes: &[u8]) -> Result<String, BadZnode> {
    #[derive(Deserialize)]
    struct ClusterId {
        id: String,
    }
    Ok(parse::<ClusterId>("cluster id", bytes)?.id)
}

/// `/brokers/topics/<t>`: the replica assignment and the topic id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicAssignment {
    /// Partition index -> replicas in placement order.
    pub partitions: BTreeMap<PartitionId, Vec<BrokerId>>,
    pub topic_id: Option<[u8; 16]>,
}

impl TopicAssignment {
    /// Partitions 0..n that are all assigned (a gap ends the count: a partition without an
    /// assignment cannot be served).
    pub fn partition_count(&self) -> i32 {
        let mut n = 0;
        while self.partitions.contains_key(&PartitionId(n)) {
            n += 1;
        }
        n
    }
}

pub fn encode_topic(assignment: &TopicAssignment) -> Vec<u8> {
    let partitions: BTreeMap<String, &Vec<BrokerId>> = assignment
        .partitions
        .iter()
        .map(|(p, r)| (p.to_string(), r))
        .collect();
    let mut doc = serde_json::json!({
        // Version 3 is Kafka's layout with topic ids (2.8+).
        "version": 3,
        "partitions": partitions,
        "adding_replicas": {},
        "removing_replicas": {},
    });
    if let (Some(id), Some(obj)) = (assignment.topic_id, doc.as_object_mut()) {
        obj.insert("topic_id".into(), kafka_uuid_string(&id).into());
    }
    to_json(&doc)
}

pub fn decode_topic(bytes: &[u8]) -> Result<TopicAssignment, BadZnode> {
    #[derive(Deserialize)]
    struct Topic {
        #[serde(default)]
        partitions: BTreeMap<String, Vec<BrokerId>>,
        topic_id: Option<String>,
    }
    let t: Topic = parse("topic assignment", bytes)?;
    let mut partitions = BTreeMap::new();
    for (p, replicas) in t.partitions {
        let p: i32 = p.parse().map_err(|_| BadZnode {
            what: "topic assignment",
            reason: format!("partition {p:?} is not a number"),
        })?;
        partitions.insert(PartitionId(p), replicas);
    }
    let topic_id = match t.topic_id {
        Some(s) => Some(parse_kafka_uuid(&s).ok_or_else(|| BadZnode {
            what: "topic assignment",
            reason: format!("bad topic_id {s:?}"),
        })?),
        None => None,
    };
    Ok(TopicAssignment {
        partitions,
        topic_id,
    })
}

/// `/brokers/topics/<t>/partitions/<p>/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateZnode {
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub isr: Vec<BrokerId>,
    pub controller_epoch: i32,
}

pub fn encode_state(s: &StateZnode) -> Vec<u8> {
    to_json(&serde_json::json!({
        "version": 1,
        "leader": s.leader,
        "leader_epoch": s.leader_epoch,
        "isr": s.isr,
        "controller_epoch": s.controller_epoch,
    }))
}

pub fn decode_state(bytes: &[u8]) -> Result<StateZnode, BadZnode> {
    parse("partition state", bytes)
}

/// `/config/topics/<t>`: `{"version":1,"config":{"key":"value"}}`.
pub fn encode_topic_config(config: &BTreeMap<String, String>) -> Vec<u8> {
    to_json(&serde_json::json!({"version": 1, "config": config}))
}

pub fn decode_topic_config(bytes: &[u8]) -> Result<BTreeMap<String, String>, BadZnode> {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        config: BTreeMap<String, serde_json::Value>,
    }
    let c: Config = parse("topic config", bytes)?;
    // Kafka stores every value as a string; accept numbers and booleans written by hand too.
    Ok(c.config
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// `/latest_producer_id_block`: the last block of producer ids handed out, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub broker: BrokerId,
    pub block_start: ProducerId,
    pub block_end: ProducerId,
}

pub fn encode_producer_id_block(b: &ProducerIdBlock) -> Vec<u8> {
    to_json(&serde_json::json!({
        "version": 1,
        "broker": b.broker,
        "block_start": b.block_start.to_string(),
        "block_end": b.block_end.to_string(),
    }))
}

pub fn decode_producer_id_block(bytes: &[u8]) -> Result<ProducerIdBlock, BadZnode> {
    #[derive(Deserialize)]
    struct Block {
        broker: BrokerId,
        block_start: String,
        block_end: String,
    }
    let b: Block = parse("producer id block", bytes)?;
    let num = |s: &str| {
        s.parse::<i64>().map_err(|_| BadZnode {
            what: "producer id block",
            reason: format!("{s:?} is not a number"),
        })
    };
    Ok(ProducerIdBlock {
        broker: b.broker,
        block_start: ProducerId(num(&b.block_start)?),
        block_end: ProducerId(num(&b.block_end)?),
    })
}

const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Kafka's `Uuid.toString()`: URL-safe base64 without padding (22 characters).
pub fn kafka_uuid_string(id: &[u8; 16]) -> String {
    let mut out = String::with_capacity(22);
    for chunk in id.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(BASE64_URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Inverse of `kafka_uuid_string`; `None` unless exactly 16 bytes are encoded.
pub fn parse_kafka_uuid(s: &str) -> Option<[u8; 16]> {
    if s.len() != 22 {
        return None;
    }
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(16);
    for c in s.bytes() {
        let v = BASE64_URL.iter().position(|&x| x == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    out.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_registration_round_trip_and_kafka_form() {
        let bytes = encode_broker("10.0.0.7", 9093, 1700000000000);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["host"], "10.0.0.7");
        assert_eq!(v["port"], 9093);
        assert_eq!(v["version"], 4);
        assert_eq!(v["endpoints"][0], "PLAINTEXT://10.0.0.7:9093");
        assert_eq!(v["timestamp"], "1700000000000");
        let b = decode_broker(BrokerId(3), &bytes).unwrap();
        assert_eq!(
            b,
            BrokerInfo {
                id: BrokerId(3),
                host: "10.0.0.7".into(),
                port: 9093
            }
        );
        // As Kafka writes it with only a SASL listener: host null, endpoints given.
        let kafka = br#"{"listener_security_protocol_map":{"SASL":"SASL_PLAINTEXT"},
            "endpoints":["SASL://broker-1:9094"],"jmx_port":-1,"host":null,
            "timestamp":"1","port":-1,"version":4}"#;
        let b = decode_broker(BrokerId(1), kafka).unwrap();
        assert_eq!((b.host.as_str(), b.port), ("broker-1", 9094));
        assert!(decode_broker(BrokerId(1), b"not json").is_err());
        assert!(decode_broker(BrokerId(1), br#"{"endpoints":[]}"#).is_err());
    }

    #[test]
    fn controller_and_epoch() {
        let bytes = encode_controller(BrokerId(2), 5);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"brokerid":2,"timestamp":"5","version":1}"#
        );
        assert_eq!(broker_path(BrokerId(2)), "/brokers/ids/2");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["brokerid"], 2);
        assert_eq!(v["version"], 1);
        assert_eq!(decode_controller(&bytes).unwrap(), BrokerId(2));
        assert_eq!(
            decode_controller(br#"{"version":1,"brokerid":7,"timestamp":"1"}"#).unwrap(),
            BrokerId(7)
        );
        assert_eq!(
            decode_controller_epoch(&encode_controller_epoch(12)).unwrap(),
            12
        );
        assert!(decode_controller_epoch(b"x").is_err());
    }

    #[test]
    fn cluster_id_round_trip() {
        let bytes = encode_cluster_id("abc");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], "1");
        assert_eq!(decode_cluster_id(&bytes).unwrap(), "abc");
    }

    #[test]
    fn topic_assignment_round_trip_with_kafka_names() {
        let mut a = TopicAssignment {
            topic_id: Some([7; 16]),
            ..Default::default()
        };
        a.partitions
            .insert(PartitionId(0), BrokerId::list(&[1, 2, 3]));
        a.partitions
            .insert(PartitionId(1), BrokerId::list(&[2, 3, 1]));
        let bytes = encode_topic(&a);
        assert!(String::from_utf8(bytes.clone())
            .unwrap()
            .contains(r#""partitions":{"0":[1,2,3],"1":[2,3,1]},"#));
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["partitions"]["1"], serde_json::json!([2, 3, 1]));
        assert_eq!(v["topic_id"].as_str().unwrap().len(), 22);
        assert_eq!(decode_topic(&bytes).unwrap(), a);
        assert_eq!(a.partition_count(), 2);
        // Kafka 2.x without a topic id.
        let old =
            decode_topic(br#"{"version":2,"partitions":{"0":[1]},"adding_replicas":{}}"#).unwrap();
        assert_eq!(old.topic_id, None);
        assert_eq!(old.partitions[&PartitionId(0)], vec![BrokerId(1)]);
        assert!(decode_topic(br#"{"partitions":{"x":[1]}}"#).is_err());
    }

    #[test]
    fn partition_state_round_trip() {
        let s = StateZnode {
            leader: BrokerId(2),
            leader_epoch: 4,
            isr: BrokerId::list(&[2, 3]),
            controller_epoch: 9,
        };
        let bytes = encode_state(&s);
        // Byte for byte what Kafka and earlier versions of this broker write (broker ids are
        // plain numbers: `BrokerId` is serde-transparent).
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"controller_epoch":9,"isr":[2,3],"leader":2,"leader_epoch":4,"version":1}"#
        );
        let offline = StateZnode {
            leader: crate::cluster::metadata::NO_LEADER,
            ..s.clone()
        };
        assert!(String::from_utf8(encode_state(&offline))
            .unwrap()
            .contains(r#""leader":-1,"#));
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["leader_epoch"], 4);
        assert_eq!(v["controller_epoch"], 9);
        assert_eq!(v["version"], 1);
        assert_eq!(decode_state(&bytes).unwrap(), s);
        let kafka =
            br#"{"controller_epoch":1,"leader":1,"version":1,"leader_epoch":0,"isr":[1,2]}"#;
        assert_eq!(decode_state(kafka).unwrap().isr, BrokerId::list(&[1, 2]));
    }

    #[test]
    fn topic_config_round_trip() {
        let mut c = BTreeMap::new();
        c.insert("cleanup.policy".to_string(), "compact".to_string());
        let bytes = encode_topic_config(&c);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["config"]["cleanup.policy"], "compact");
        assert_eq!(decode_topic_config(&bytes).unwrap(), c);
        let hand = decode_topic_config(br#"{"version":1,"config":{"retention.ms":1000}}"#).unwrap();
        assert_eq!(hand["retention.ms"], "1000");
    }

    #[test]
    fn producer_id_block_round_trip() {
        let b = ProducerIdBlock {
            broker: BrokerId(1),
            block_start: ProducerId(1000),
            block_end: ProducerId(1999),
        };
        let bytes = encode_producer_id_block(&b);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"block_end":"1999","block_start":"1000","broker":1,"version":1}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["block_start"], "1000");
        assert_eq!(v["block_end"], "1999");
        assert_eq!(decode_producer_id_block(&bytes).unwrap(), b);
    }

    #[test]
    fn kafka_uuid_strings() {
        // Kafka: new Uuid(0, 1).toString() == "AAAAAAAAAAAAAAAAAAAAAQ".
        let mut one = [0u8; 16];
        one[15] = 1;
        assert_eq!(kafka_uuid_string(&one), "AAAAAAAAAAAAAAAAAAAAAQ");
        let id: [u8; 16] = core::array::from_fn(|i| (i * 37 + 250) as u8);
        let s = kafka_uuid_string(&id);
        assert_eq!(s.len(), 22);
        assert_eq!(parse_kafka_uuid(&s), Some(id));
        assert_eq!(parse_kafka_uuid("short"), None);
        assert_eq!(parse_kafka_uuid("AAAAAAAAAAAAAAAAAAAA*Q"), None);
    }
}
