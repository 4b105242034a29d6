//! Typed storage errors. Each variant says whether a client may retry and which Kafka error code
//! the broker answers with.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    /// The file system refused an operation. Not retriable on this broker: the partition should
    /// be taken offline and reopened (which runs recovery). KAFKA_STORAGE_ERROR (56).
    #[error("storage i/o error: {0}")]
    Io(#[from] io::Error),
    /// Bytes on disk that recovery could not repair, or a read that found a broken batch chain.
    /// KAFKA_STORAGE_ERROR (56).
    #[error("corrupt log segment {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A read or DeleteRecords outside `[log_start_offset, log_end_offset]`.
    /// OFFSET_OUT_OF_RANGE (1).
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// The caller broke the append contract (offsets not starting at the log end, batch
    /// descriptions that do not match the bytes). A broker bug, never client input.
    /// UNKNOWN_SERVER_ERROR (-1).
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// One append larger than a segment can address (2 GiB, int32 index positions).
    /// RECORD_LIST_TOO_LARGE (18).
    #[error("record set of {0} bytes does not fit in one segment")]
    RecordSetTooLarge(usize),
    /// A `LogConfig` outside Kafka's ranges. INVALID_CONFIG (40).
    #[error("invalid log config: {0}")]
    InvalidConfig(String),
}

impl StorageError {
    /// The Kafka error code a response carries for this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            StorageError::Io(_) | StorageError::Corrupt { .. } => 56,
            StorageError::OffsetOutOfRange { .. } => 1,
            StorageError::InvalidAppend(_) => -1,
            StorageError::RecordSetTooLarge(_) => 18,
            StorageError::InvalidConfig(_) => 40,
        }
    }

    /// Whether the same request may succeed if the client retries it later.
    pub fn is_retriable(&self) -> bool {
        // KAFKA_STORAGE_ERROR is retriable in Kafka: the client refreshes metadata and retries,
        // possibly on another replica.
        matches!(self, StorageError::Io(_) | StorageError::Corrupt { .. })
    }
}

impl From<shardlog_runtime::Error> for StorageError {
    fn from(e: shardlog_runtime::Error) -> Self {
        StorageError::Io(e.into())
    }
}
