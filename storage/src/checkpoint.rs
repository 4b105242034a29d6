//! The per-partition `checkpoint` file: recovery point and log start offset, written atomically
//! (temporary file, fdatasync, rename, directory fsync). Layout in `FORMAT.md`.

use std::io;
use std::path::Path;

use shardlog_runtime::fs::{Directory, OpenOptions};

use crate::error::StorageError;
use crate::segment;

pub const CHECKPOINT_FILE: &str = "checkpoint";
pub const CHECKPOINT_TMP_FILE: &str = "checkpoint.tmp";
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";
pub const HIGH_WATERMARK_TMP_FILE: &str = "high-watermark.tmp";
const HW_MAGIC: &str = "shardlog-high-watermark";
const MAGIC: &str = "shardlog-partition-checkpoint";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every offset below this is on disk (fdatasync'ed) together with its indexes; recovery
    /// after an unclean stop scans only from the segment that contains it.
    pub recovery_point: i64,
    /// The log start offset, which DeleteRecords can move inside a segment.
    pub log_start_offset: i64,
}

impl Checkpoint {
    pub fn encode(&self) -> String {
        format!(
            "{MAGIC} {VERSION}\nrecovery_point {}\nlog_start_offset {}\n",
            self.recovery_point, self.log_start_offset
        )
    }

    /// Parses the exact layout `encode` writes; anything else is `None`.
    pub fn decode(text: &str) -> Option<Checkpoint> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        let header = lines.next()?;
        if header != format!("{MAGIC} {VERSION}") {
            return None;
        }
        let field = |line: Option<&str>, key: &str| -> Option<i64> {
            let v = line?.strip_prefix(key)?.strip_prefix(' ')?;
            v.parse::<i64>().ok().filter(|v| *v >= 0)
        };
        let recovery_point = field(lines.next(), "recovery_point")?;
        let log_start_offset = field(lines.next(), "log_start_offset")?;
        if lines.next().is_some() {
            return None;
        }
        Some(Checkpoint {
            recovery_point,
            log_start_offset,
        })
    }
}

/// Reads the checkpoint of a partition directory. A missing or unreadable one is `None`
/// (recovery then scans every segment and the log starts at the first segment).
pub fn read(dir: &Path) -> Result<Option<Checkpoint>, StorageError> {
    let path = dir.join(CHECKPOINT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let cp = Checkpoint::decode(&text);
            if cp.is_none() {
                log::warn!("ignoring malformed checkpoint {}", path.display());
            }
            Ok(cp)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            log::warn!("ignoring non-UTF-8 checkpoint {}", path.display());
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `bytes` to a fresh `tmp` file (fdatasync'ed if `sync`) and renames it over `dest`.
async fn replace_file(
    tmp: &Path,
    dest: &Path,
    bytes: Vec<u8>,
    sync: bool,
) -> Result<(), StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(tmp)
        .await?;
    let len = bytes.len();
    let written = file.write_at(bytes, 0).await;
    let synced = match &written {
        Ok(_) if sync => file.fdatasync().await,
        _ => Ok(()),
    };
    file.close().await?;
    // The errors name the temporary file: it is the one the write went to (`dest` is intact).
    let written = written.map_err(|e| segment::write_error("writing", Some(tmp), e))?;
    if written != len {
        return Err(segment::short_write_error(Some(tmp), written, len).into());
    }
    // File systems with delayed allocation may report a full disk only at the sync.
    synced.map_err(|e| segment::write_error("syncing", Some(tmp), e))?;
    shardlog_runtime::fs::rename(tmp, dest).await?;
    Ok(())
}

/// A partition directory, opened only for the moment of an fsync (after files in it were
/// created, renamed or removed): a partition holds no descriptor for it in between, which
/// matters with thousands of partitions under one descriptor limit.
#[derive(Debug)]
pub struct DirHandle {
    path: std::path::PathBuf,
}

impl DirHandle {
    pub fn new(path: &Path) -> DirHandle {
        DirHandle {
            path: path.to_path_buf(),
        }
    }

    /// fsync of the directory (its entries).
    pub async fn sync(&self) -> Result<(), StorageError> {
        let d = Directory::open(&self.path).await?;
        let synced = d.sync().await;
        let closed = d.close().await;
        synced?;
        closed?;
        Ok(())
    }
}

/// Replaces the checkpoint atomically (fdatasync before the rename, directory fsync after).
pub async fn write(dir: &Path, dir_handle: &DirHandle, cp: Checkpoint) -> Result<(), StorageError> {
    replace_file(
        &dir.join(CHECKPOINT_TMP_FILE),
        &dir.join(CHECKPOINT_FILE),
        cp.encode().into_bytes(),
        true,
    )
    .await?;
    dir_handle.sync().await?;
    Ok(())
}

fn encode_high_watermark(hw: i64) -> String {
    format!("{HW_MAGIC} {VERSION}\n{hw}\n")
}

/// Parses the exact layout `encode_high_watermark` writes; anything else is `None`.
fn decode_high_watermark(text: &str) -> Option<i64> {
    let mut lines = text.strip_suffix('\n')?.split('\n');
    if lines.next()? != format!("{HW_MAGIC} {VERSION}") {
        return None;
    }
    let hw = lines.next()?.parse::<i64>().ok().filter(|v| *v >= 0)?;
    lines.next().is_none().then_some(hw)
}

/// The replicated high watermark last stored in a partition directory (cluster mode), or
/// `None` if there is none or it is unreadable.
pub fn read_high_watermark(dir: &Path) -> Option<i64> {
    let path = dir.join(HIGH_WATERMARK_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let hw = decode_high_watermark(&text);
            if hw.is_none() {
                log::warn!("ignoring malformed {}", path.display());
            }
            hw
        }
        Err(_) => None,
    }
}

/// Replaces the stored high watermark (temporary file, rename). Not fsync'ed: a value lost in
/// a crash leaves an older, smaller one, which only delays what consumers see after a restart;
/// the file never holds more than the broker had committed.
pub async fn write_high_watermark(dir: &Path, hw: i64) -> Result<(), StorageError> {
    replace_file(
        &dir.join(HIGH_WATERMARK_TMP_FILE),
        &dir.join(HIGH_WATERMARK_FILE),
        encode_high_watermark(hw).into_bytes(),
        false,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_watermark_round_trip_and_strict_parsing() {
        let text = encode_high_watermark(4711);
        assert_eq!(text, "shardlog-high-watermark 1\n4711\n");
        assert_eq!(decode_high_watermark(&text), Some(4711));
        assert_eq!(decode_high_watermark(&text[..text.len() - 1]), None);
        assert_eq!(decode_high_watermark(&text.replace("4711", "-1")), None);
        assert_eq!(decode_high_watermark(&format!("{text}1\n")), None);
        assert_eq!(decode_high_watermark(""), None);
    }

    #[test]
    fn round_trip_and_strict_parsing() {
        let cp = Checkpoint {
            recovery_point: 1234,
            log_start_offset: 1000,
        };
        let text = cp.encode();
        assert_eq!(
            text,
            "shardlog-partition-checkpoint 1\nrecovery_point 1234\nlog_start_offset 1000\n"
        );
        assert_eq!(Checkpoint::decode(&text), Some(cp));
        assert_eq!(Checkpoint::decode(&text[..text.len() - 1]), None);
        assert_eq!(Checkpoint::decode(&text.replace(" 1\n", " 2\n")), None);
        assert_eq!(Checkpoint::decode(&text.replace("1000", "-5")), None);
        assert_eq!(Checkpoint::decode(&text.replace("1000", "x")), None);
        assert_eq!(Checkpoint::decode(&format!("{text}extra\n")), None);
        assert_eq!(Checkpoint::decode(""), None);
    }
}
