//! Output for humans and scripts: aligned text tables, pretty JSON, and the small formatting
//! helpers (timestamps, byte strings) every subcommand shares. Nothing here talks to a broker.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::Value;

/// A text table: a header row and left-aligned columns separated by two spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are kept (and widen the table).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain(std::iter::once(self.headers.len()))
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == columns {
                    text.push_str(cell);
                } else {
                    let pad = width - cell.chars().count();
                    let _ = write!(text, "{cell}{}  ", " ".repeat(pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Writes `value` as pretty JSON followed by a newline.
pub fn print_json(out: &mut dyn Write, value: &Value) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2024-05-01T12:00:00.123Z`); negative values
/// (Kafka's "no timestamp", -1) print as `-`.
pub fn format_timestamp(ms: i64) -> String {
    if ms < 0 {
        return "-".to_string();
    }
    shardlog_protocol::time::rfc3339_millis(ms)
}

/// Bytes as text: UTF-8 where valid, with invalid sequences replaced.
pub fn bytes_text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An optional byte string for JSON: `null` or a (lossy) UTF-8 string.
pub fn json_bytes(b: Option<&[u8]>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => Value::String(bytes_text(b)),
    }
}

/// A list of broker ids as `1,2,3`.
pub fn ids(list: &[i32]) -> String {
    list.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_line_ends() {
        let mut t = Table::new(&["TOPIC", "PARTITIONS", "RF"]);
        t.row(vec!["orders".into(), "12".into(), "3".into()]);
        t.row(vec!["a".into(), "1".into(), "".into()]);
        assert_eq!(
            t.render(),
            "TOPIC   PARTITIONS  RF\norders  12          3\na       1\n"
        );
        assert_eq!(Table::new(&["X"]).render(), "X\n");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let mut t = Table::new(&["K", "V"]);
        t.row(vec!["ключ".into(), "1".into()]);
        assert_eq!(t.render(), "K     V\nключ  1\n");
    }

    #[test]
    fn timestamps_render_as_utc() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp(1_714_564_800_123),
            "2024-05-01T12:00:00.123Z"
        );
        assert_eq!(
            format_timestamp(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format_timestamp(-1), "-");
    }

    #[test]
    fn json_output_is_pretty_and_newline_terminated() {
        let mut out = Vec::new();
        print_json(&mut out, &serde_json::json!({"a": [1, 2]})).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("}\n"));
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["a"][1], 2);
        assert_eq!(json_bytes(None), Value::Null);
        assert_eq!(
            json_bytes(Some(b"x\xff")),
            Value::String("x\u{fffd}".into())
        );
        assert_eq!(ids(&[1, 2, 3]), "1,2,3");
    }
}
