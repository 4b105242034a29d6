//! Exit statuses and the advice printed with errors. Scripts rely on the statuses:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | anything else (a file could not be read, bad input data) |
//! | 2 | usage error (bad flags or arguments; clap uses 2 as well) |
//! | 3 | broker unreachable (connect, I/O or timeout) |
//! | 4 | the broker answered with an error, or with something malformed |
//! | 5 | `segment verify` found damage |
//! | 6 | `consume` fetched a batch that failed its CRC check (corrupt data in the log) |

use shardlog_client::{codes, ClientError};

pub const OK: i32 = 0;
pub const OTHER: i32 = 1;
pub const USAGE: i32 = 2;
pub const UNREACHABLE: i32 = 3;
pub const BROKER: i32 = 4;
pub const DAMAGE: i32 = 5;
pub const CORRUPT: i32 = 6;

/// A mistake in how the tool was invoked that clap cannot catch (e.g. a bad template).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `segment verify` found damaged files (the report was already printed).
#[derive(Debug)]
pub struct DamageFound {
    pub damaged_segments: usize,
}

impl std::fmt::Display for DamageFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "damage found in {} segment(s)", self.damaged_segments)
    }
}

impl std::error::Error for DamageFound {}

/// A fetched record batch failed its CRC check: the bytes in the partition leader's log are
/// not what the producer sent (disk or file system damage), which no retry will fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptBatch {
    pub topic: String,
    pub partition: i32,
    /// The leader the batch came from.
    pub broker: i32,
    /// The batch's first and last offsets, as its header says.
    pub base_offset: i64,
    pub last_offset: i64,
}

impl std::fmt::Display for CorruptBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "topic {:?} partition {} at offset {}: the batch (offsets {} to {}) failed its CRC \
             check (corrupt data in the log of broker {})",
            self.topic,
            self.partition,
            self.base_offset,
            self.base_offset,
            self.last_offset,
            self.broker
        )
    }
}

impl std::error::Error for CorruptBatch {}

/// Shorthand for returning a usage error.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// The exit status for an error, from the first cause that classifies it.
pub fn status_of(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return USAGE;
        }
        if cause.downcast_ref::<DamageFound>().is_some() {
            return DAMAGE;
        }
        if cause.downcast_ref::<CorruptBatch>().is_some() {
            return CORRUPT;
        }
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return match e {
                ClientError::Unreachable { .. } => UNREACHABLE,
                _ => BROKER,
            };
        }
    }
    OTHER
}

/// What the user can do about an error, when there is something useful to say.
pub fn hint(err: &anyhow::Error, bootstrap: &str) -> Option<String> {
    if let Some(c) = err.chain().find_map(|c| c.downcast_ref::<CorruptBatch>()) {
        return Some(format!(
            "run `shardlog-cli segment verify <data-dir>` on broker {} to find the damaged \
             segment; `consume {} --partition {} --offset {}` reads on past the batch.",
            c.broker,
            c.topic,
            c.partition,
            c.last_offset.saturating_add(1)
        ));
    }
    let client = err.chain().find_map(|c| c.downcast_ref::<ClientError>())?;
    let text = match client {
        ClientError::Unreachable { .. } => format!(
            "is a broker running at {bootstrap}? Pass --bootstrap host:port or set \
             SHARDLOG_BOOTSTRAP; raise --timeout-ms for a slow broker."
        ),
        ClientError::UnsupportedApi { api, .. } => format!(
            "this broker does not implement {api}; upgrade the broker or use a command that \
             does not need it."
        ),
        ClientError::Protocol { .. } => "the broker's answer could not be decoded; this is a bug \
             in the broker or in shardlog-cli; please report it with the command line used."
            .to_string(),
        ClientError::Broker { code, .. } => match *code {
            codes::UNKNOWN_TOPIC_OR_PARTITION => "check the name with `shardlog-cli topic list`; \
                 create a topic with `shardlog-cli topic create <name>`."
                .to_string(),
            codes::TOPIC_ALREADY_EXISTS => {
                "pass --if-not-exists to treat an existing topic as success.".to_string()
            }
            codes::GROUP_ID_NOT_FOUND => {
                "list the groups with `shardlog-cli group list`.".to_string()
            }
            codes::NON_EMPTY_GROUP | codes::REBALANCE_IN_PROGRESS => {
                "stop the group's consumers first, then retry.".to_string()
            }
            codes::OFFSET_OUT_OF_RANGE => "the offset is outside the log; see the valid range \
                 with `shardlog-cli offsets <topic>`."
                .to_string(),
            codes::NOT_LEADER_OR_FOLLOWER
            | codes::LEADER_NOT_AVAILABLE
            | codes::NOT_COORDINATOR
            | codes::COORDINATOR_NOT_AVAILABLE
            | codes::COORDINATOR_LOAD_IN_PROGRESS
            | codes::REQUEST_TIMED_OUT => {
                "the cluster is changing; retry in a few seconds.".to_string()
            }
            _ => return None,
        },
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_first_classified_cause() {
        let unreachable = anyhow::Error::new(ClientError::Unreachable {
            addr: "x:1".into(),
            context: "connecting".into(),
            request_sent: false,
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        })
        .context("listing topics");
        assert_eq!(status_of(&unreachable), UNREACHABLE);
        let broker = anyhow::Error::new(ClientError::broker(3, "x", None)).context("describing");
        assert_eq!(status_of(&broker), BROKER);
        let protocol = anyhow::Error::new(ClientError::Protocol {
            addr: "x".into(),
            detail: "junk".into(),
        });
        assert_eq!(status_of(&protocol), BROKER);
        assert_eq!(status_of(&usage("bad template")), USAGE);
        let damage = anyhow::Error::new(DamageFound {
            damaged_segments: 2,
        });
        assert_eq!(status_of(&damage), DAMAGE);
        let corrupt = anyhow::Error::new(CorruptBatch {
            topic: "t".into(),
            partition: 1,
            broker: 0,
            base_offset: 2,
            last_offset: 4,
        })
        .context("consuming");
        assert_eq!(status_of(&corrupt), CORRUPT);
        assert_eq!(status_of(&anyhow::anyhow!("cannot read file")), OTHER);
    }

    #[test]
    fn hints_say_what_to_do() {
        let unreachable = anyhow::Error::new(ClientError::Unreachable {
            addr: "x:1".into(),
            context: "connecting".into(),
            request_sent: false,
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        });
        assert!(hint(&unreachable, "h:1").unwrap().contains("--bootstrap"));
        let exists = anyhow::Error::new(ClientError::broker(codes::TOPIC_ALREADY_EXISTS, "", None));
        assert!(hint(&exists, "h:1").unwrap().contains("--if-not-exists"));
        assert!(hint(&anyhow::anyhow!("x"), "h:1").is_none());
    }
}
