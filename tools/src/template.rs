//! The `consume --format` template: literal text with `{field}` placeholders, compiled once and
//! rendered per record. Fields: `{topic}` `{partition}` `{offset}` `{timestamp}` (ms) `{time}`
//! (RFC 3339 UTC) `{key}` `{value}` `{headers}` (`k=v,k=v`) `{header.NAME}` (the first header
//! called NAME). Escapes: `\n`, `\t`, `\r`, `\\`; `{{` and `}}` are literal braces. A null key,
//! value or header value prints as `null`.

use bytes::Bytes;

use crate::output::{bytes_text, format_timestamp};

/// One record as the template sees it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Bytes>)],
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Time,
    Key,
    Value,
    Headers,
    Header(String),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

const FIELDS: &str =
    "{topic} {partition} {offset} {timestamp} {time} {key} {value} {headers} {header.NAME}";

impl Template {
    /// Compiles `text`; the error says what is wrong and lists the valid fields.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => literal.push('\n'),
                    Some('t') => literal.push('\t'),
                    Some('r') => literal.push('\r'),
                    Some('\\') => literal.push('\\'),
                    Some(other) => {
                        return Err(format!(
                            "unknown escape \\{other} in format (use \\n, \\t, \\r or \\\\)"
                        ))
                    }
                    None => return Err("format ends with a lone backslash".to_string()),
                },
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err("unmatched } in format (write }} for a literal brace)".to_string())
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => name.push(ch),
                            None => {
                                return Err("unclosed { in format (write {{ for a literal brace)"
                                    .to_string())
                            }
                        }
                    }
                    let piece = match name.as_str() {
                        "topic" => Piece::Topic,
                        "partition" => Piece::Partition,
                        "offset" => Piece::Offset,
                        "timestamp" => Piece::Timestamp,
                        "time" => Piece::Time,
                        "key" => Piece::Key,
                        "value" => Piece::Value,
                        "headers" => Piece::Headers,
                        n if n.starts_with("header.") && n.len() > "header.".len() => {
                            Piece::Header(n["header.".len()..].to_string())
                        }
                        other => {
                            return Err(format!(
                                "unknown field {{{other}}} in format; fields: {FIELDS}"
                            ))
                        }
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template { pieces })
    }

    /// Renders one record (without a trailing newline; the caller adds it).
    pub fn render(&self, r: &RecordView<'_>) -> String {
        let mut out = String::new();
        let opt = |b: Option<&[u8]>| b.map(bytes_text).unwrap_or_else(|| "null".to_string());
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Topic => out.push_str(r.topic),
                Piece::Partition => out.push_str(&r.partition.to_string()),
                Piece::Offset => out.push_str(&r.offset.to_string()),
                Piece::Timestamp => out.push_str(&r.timestamp.to_string()),
                Piece::Time => out.push_str(&format_timestamp(r.timestamp)),
                Piece::Key => out.push_str(&opt(r.key)),
                Piece::Value => out.push_str(&opt(r.value)),
                Piece::Headers => {
                    let text: Vec<String> = r
                        .headers
                        .iter()
                        .map(|(k, v)| format!("{k}={}", opt(v.as_deref())))
                        .collect();
                    out.push_str(&text.join(","));
                }
                Piece::Header(name) => {
                    let v = r.headers.iter().find(|(k, _)| k == name);
                    out.push_str(&opt(v.and_then(|(_, v)| v.as_deref())));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(headers: &[(String, Option<Bytes>)]) -> RecordView<'_> {
        RecordView {
            topic: "orders",
            partition: 3,
            offset: 42,
            timestamp: 1_714_564_800_123,
            key: Some(b"k1"),
            value: None,
            headers,
        }
    }

    #[test]
    fn renders_every_field() {
        let headers = vec![
            ("a".to_string(), Some(Bytes::from_static(b"1"))),
            ("b".to_string(), None),
        ];
        let t = Template::parse(
            "{topic}/{partition}@{offset} {timestamp} {time} {key}={value} [{headers}] {header.a} {header.zz}",
        )
        .unwrap();
        assert_eq!(
            t.render(&view(&headers)),
            "orders/3@42 1714564800123 2024-05-01T12:00:00.123Z k1=null [a=1,b=null] 1 null"
        );
    }

    #[test]
    fn escapes_and_literal_braces() {
        let t = Template::parse("{{{offset}}}\\t{value}\\n\\\\").unwrap();
        assert_eq!(t.render(&view(&[])), "{42}\tnull\n\\");
        assert_eq!(Template::parse("").unwrap().render(&view(&[])), "");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(Template::parse("{nope}")
            .unwrap_err()
            .contains("unknown field {nope}"));
        assert!(Template::parse("{value").unwrap_err().contains("unclosed"));
        assert!(Template::parse("value}")
            .unwrap_err()
            .contains("unmatched }"));
        assert!(Template::parse("\\q")
            .unwrap_err()
            .contains("unknown escape"));
        assert!(Template::parse("x\\")
            .unwrap_err()
            .contains("lone backslash"));
        assert!(Template::parse("{header.}").is_err());
    }

    #[test]
    fn non_utf8_bytes_are_replaced_not_fatal() {
        let t = Template::parse("{key}").unwrap();
        let mut v = view(&[]);
        v.key = Some(b"\xffA");
        assert_eq!(t.render(&v), "\u{fffd}A");
    }
}
