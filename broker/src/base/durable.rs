//! Replacing a small file so that a crash leaves either the old or the new contents. Blocking:
//! called from the control thread or from blocking-work threads, never on a shard.

use std::io::Write;
use std::path::Path;

/// Replaces `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(())
}
