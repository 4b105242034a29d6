//! Hand-written SVG plots that read on their own: title, axes with units, legend and a caption
//! naming the workload, the broker and the date.
//!
//! - [`latency_plot`]: latency by percentile, the HdrHistogram way: the x axis is
//!   `log10(1 / (1 - p))`, so 90 %, 99 %, 99.9 %... are evenly spaced and the tail is visible.
//!   The y axis switches to a log scale when the tail is more than 50x the median.
//! - [`throughput_plot`]: MB/s over time for produce and consume, with records/s on the right
//!   axis (the same line read with the run's mean record size) and the warm-up shaded.

use std::fmt::Write;

const W: f64 = 960.0;
const H: f64 = 600.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 90.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 150.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Escapes text for SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// A linear or log10 axis mapping data values to pixels.
#[derive(Debug, Clone, Copy)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    px_lo: f64,
    px_hi: f64,
}

impl Axis {
    fn map(&self, v: f64) -> f64 {
        let (a, b, x) = if self.log {
            (self.lo.log10(), self.hi.log10(), v.max(self.lo).log10())
        } else {
            (self.lo, self.hi, v)
        };
        let f = if b > a { (x - a) / (b - a) } else { 0.0 };
        self.px_lo + f.clamp(0.0, 1.0) * (self.px_hi - self.px_lo)
    }
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about `n` ticks up to `max`.
pub fn nice_step(max: f64, n: usize) -> f64 {
    if max.is_nan() || max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / n as f64;
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let f = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * p
}

/// Short number for tick labels: 0.05, 1.5, 20, 1.2k, 3M.
pub fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if a >= 1e4 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 1.0 {
        trim(format!("{v:.2}"))
    } else {
        trim(format!("{v:.4}"))
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn header(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif">
<title>{t}</title>
<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>
<text x="{cx}" y="32" font-size="20" text-anchor="middle" font-weight="bold">{t}</text>
"#,
        t = escape(title),
        cx = W / 2.0
    );
}

fn caption(out: &mut String, lines: &[String]) {
    let mut y = H - BOTTOM + 72.0;
    for l in lines {
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{y}" font-size="12" fill="#333">{}</text>"##,
            escape(l)
        );
        y += 16.0;
    }
}

fn frame(out: &mut String) {
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#444" stroke-width="1"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
}

fn polyline(out: &mut String, pts: &[(f64, f64)], color: &str, dashed: bool) {
    if pts.is_empty() {
        return;
    }
    let mut d = String::new();
    for (x, y) in pts {
        let _ = write!(d, "{x:.1},{y:.1} ");
    }
    let dash = if dashed {
        r#" stroke-dasharray="6,4""#
    } else {
        ""
    };
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
        d.trim_end()
    );
}

fn legend(out: &mut String, entries: &[(String, &str, bool)]) {
    let x = LEFT + 14.0;
    let mut y = TOP + 20.0;
    for (name, color, dashed) in entries {
        let dash = if *dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"{dash}/><text x="{}" y="{}" font-size="13">{}</text>"#,
            x + 28.0,
            x + 36.0,
            y + 4.0,
            escape(name)
        );
        y += 20.0;
    }
}

fn y_ticks(out: &mut String, axis: &Axis, label: impl Fn(f64) -> String, right: bool) {
    let ticks: Vec<f64> = if axis.log {
        let mut t = Vec::new();
        let mut decade = 10f64.powf(axis.lo.log10().floor());
        while decade <= axis.hi * 1.0001 {
            for m in [1.0, 2.0, 5.0] {
                let v = decade * m;
                if v >= axis.lo * 0.9999 && v <= axis.hi * 1.0001 {
                    t.push(v);
                }
            }
            decade *= 10.0;
        }
        t
    } else {
        let step = nice_step(axis.hi - axis.lo, 6);
        let mut t = Vec::new();
        let mut v = axis.lo;
        while v <= axis.hi + step * 1e-9 {
            t.push(v);
            v += step;
        }
        t
    };
    for v in ticks {
        let y = axis.map(v);
        if right {
            let x = W - RIGHT;
            let _ = writeln!(
                out,
                r##"<line x1="{x}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#444"/><text x="{}" y="{:.1}" font-size="12">{}</text>"##,
                x + 5.0,
                x + 8.0,
                y + 4.0,
                escape(&label(v))
            );
        } else {
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                escape(&label(v))
            );
        }
    }
}

fn axis_titles(out: &mut String, x_title: &str, y_title: &str, y2_title: Option<&str>) {
    let mid_y = TOP + (H - TOP - BOTTOM) / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="14" text-anchor="middle">{}</text>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - BOTTOM + 40.0,
        escape(x_title)
    );
    let _ = writeln!(
        out,
        r#"<text x="24" y="{mid_y}" font-size="14" text-anchor="middle" transform="rotate(-90 24 {mid_y})">{}</text>"#,
        escape(y_title)
    );
    if let Some(t) = y2_title {
        let x = W - 20.0;
        let _ = writeln!(
            out,
            r#"<text x="{x}" y="{mid_y}" font-size="14" text-anchor="middle" transform="rotate(90 {x} {mid_y})">{}</text>"#,
            escape(t)
        );
    }
}

/// One latency distribution to draw: its name and (percentile, ms) points.
pub struct LatencyCurve<'a> {
    pub name: String,
    pub curve: &'a [(f64, f64)],
}

/// Latency by percentile. `samples` (the largest count among the curves) sets how far into the
/// tail the x axis reaches: there is no 99.999th percentile in a thousand samples.
pub fn latency_plot(
    title: &str,
    caption_lines: &[String],
    curves: &[LatencyCurve],
    samples: u64,
) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let x_max = ((samples.max(10) as f64).log10().ceil()).clamp(2.0, 6.0);
    let xform = |p: f64| -> f64 {
        if p >= 100.0 {
            x_max
        } else {
            (1.0 / (1.0 - p / 100.0)).log10().min(x_max)
        }
    };
    let max_ms = curves
        .iter()
        .flat_map(|c| c.curve.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let median = curves
        .iter()
        .filter_map(|c| c.curve.iter().find(|p| p.0 >= 50.0).map(|p| p.1))
        .fold(f64::INFINITY, f64::min);
    let min_ms = curves
        .iter()
        .flat_map(|c| c.curve.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let log = median.is_finite() && median > 0.0 && max_ms / median > 50.0;
    let y = if log {
        let lo = 10f64.powf(min_ms.max(0.001).log10().floor());
        let hi = 10f64.powf(max_ms.max(lo * 10.0).log10().ceil());
        Axis {
            lo,
            hi,
            log: true,
            px_lo: H - BOTTOM,
            px_hi: TOP,
        }
    } else {
        let step = nice_step(max_ms.max(0.001) * 1.05, 6);
        let hi = (max_ms.max(0.001) * 1.05 / step).ceil() * step;
        Axis {
            lo: 0.0,
            hi,
            log: false,
            px_lo: H - BOTTOM,
            px_hi: TOP,
        }
    };
    let x = Axis {
        lo: 0.0,
        hi: x_max,
        log: false,
        px_lo: LEFT,
        px_hi: W - RIGHT,
    };
    y_ticks(&mut out, &y, tick_label, false);
    for d in 0..=(x_max as i32) {
        let px = x.map(d as f64);
        let label = match d {
            0 => "0%".to_string(),
            d => format!("{}%", trim(format!("{:.6}", 100.0 - 100.0 / 10f64.powi(d)))),
        };
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{}" stroke="#ddd"/><text x="{px:.1}" y="{}" font-size="12" text-anchor="middle">{label}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    frame(&mut out);
    let mut legend_entries = Vec::new();
    for (i, c) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = c
            .curve
            .iter()
            .map(|(p, ms)| (x.map(xform(*p)), y.map(*ms)))
            .collect();
        polyline(&mut out, &pts, color, false);
        legend_entries.push((c.name.clone(), color, false));
    }
    legend(&mut out, &legend_entries);
    axis_titles(
        &mut out,
        "percentile (log scale of 1 / (1 - p))",
        &format!("latency, ms{}", if log { " (log scale)" } else { "" }),
        None,
    );
    caption(&mut out, caption_lines);
    out.push_str("</svg>\n");
    out
}

/// One throughput series over time: its name and (seconds, MB/s) points.
pub struct RateSeries<'a> {
    pub name: String,
    pub points: &'a [(f64, f64)],
}

/// Throughput over time. `bytes_per_record` (> 0) scales the right axis to records/s.
pub fn throughput_plot(
    title: &str,
    caption_lines: &[String],
    series: &[RateSeries],
    warmup_s: f64,
    bytes_per_record: f64,
) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let t_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let v_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(0.001);
    let x_step = nice_step(t_max, 10);
    let x = Axis {
        lo: 0.0,
        hi: (t_max / x_step).ceil() * x_step,
        log: false,
        px_lo: LEFT,
        px_hi: W - RIGHT,
    };
    let y_step = nice_step(v_max * 1.1, 6);
    let y = Axis {
        lo: 0.0,
        hi: (v_max * 1.1 / y_step).ceil() * y_step,
        log: false,
        px_lo: H - BOTTOM,
        px_hi: TOP,
    };
    if warmup_s > 0.0 {
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{}" fill="#eee"/><text x="{:.1}" y="{}" font-size="11" fill="#666" text-anchor="middle">warm-up</text>"##,
            x.map(warmup_s) - LEFT,
            H - TOP - BOTTOM,
            (LEFT + x.map(warmup_s)) / 2.0,
            H - BOTTOM - 6.0
        );
    }
    y_ticks(&mut out, &y, tick_label, false);
    if bytes_per_record > 0.0 {
        // The same lines read in records/s: the right axis spans the same pixels, with its own
        // round tick values.
        let right = Axis {
            hi: y.hi * 1e6 / bytes_per_record,
            ..y
        };
        y_ticks(&mut out, &right, tick_label, true);
    }
    let mut t = 0.0;
    while t <= x.hi + 1e-9 {
        let px = x.map(t);
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{}" stroke="#444"/><text x="{px:.1}" y="{}" font-size="12" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 5.0,
            H - BOTTOM + 18.0,
            tick_label(t)
        );
        t += x_step;
    }
    frame(&mut out);
    let mut legend_entries = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|(t, v)| (x.map(*t), y.map(*v)))
            .collect();
        polyline(&mut out, &pts, color, i > 0);
        legend_entries.push((s.name.clone(), color, i > 0));
    }
    legend(&mut out, &legend_entries);
    axis_titles(
        &mut out,
        "time since start, s",
        "throughput, MB/s (10^6 bytes of record batches)",
        (bytes_per_record > 0.0).then_some("records/s"),
    );
    caption(&mut out, caption_lines);
    out.push_str("</svg>\n");
    out
}

/// A small well-formedness check: balanced tags, quoted attributes, known entities only.
/// Enough to catch what hand-written SVG gets wrong; not a full XML parser.
pub fn check_well_formed(svg: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    let mut root_seen = false;
    while let Some(lt) = rest.find('<') {
        check_text(&rest[..lt])?;
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<?") {
            let end = r.find("?>").ok_or("unterminated <?")?;
            rest = &r[end + 2..];
            continue;
        }
        let gt = find_tag_end(rest).ok_or("unterminated tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .ok_or_else(|| format!("</{name}> closes nothing"))?;
            if open != name.trim() {
                return Err(format!("</{}> closes <{open}>", name.trim()));
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":-_".contains(c))
        {
            return Err(format!("bad tag name in <{tag}>"));
        }
        check_attributes(&body[name.len()..])?;
        if stack.is_empty() {
            if root_seen {
                return Err("more than one root element".into());
            }
            root_seen = true;
        }
        if !self_closing {
            stack.push(name);
        }
    }
    check_text(rest)?;
    if let Some(open) = stack.pop() {
        return Err(format!("<{open}> is never closed"));
    }
    if !root_seen {
        return Err("no root element".into());
    }
    Ok(())
}

fn find_tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (None, '"') | (None, '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn check_attributes(s: &str) -> Result<(), String> {
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("attribute without value: {rest}"))?;
        let name = rest[..eq].trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":-_".contains(c))
        {
            return Err(format!("bad attribute name '{name}'"));
        }
        let after = rest[eq + 1..].trim_start();
        let q = after.chars().next().ok_or("attribute value missing")?;
        if q != '"' && q != '\'' {
            return Err(format!("unquoted value for attribute '{name}'"));
        }
        let end = after[1..].find(q).ok_or("unterminated attribute value")?;
        let value = &after[1..1 + end];
        if value.contains('<') {
            return Err(format!("'<' in attribute '{name}'"));
        }
        check_text(value)?;
        rest = after[end + 2..].trim_start();
    }
    Ok(())
}

fn check_text(s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        let r = &rest[amp + 1..];
        let semi = r.find(';').ok_or("bare '&'")?;
        let ent = &r[..semi];
        let known = ["amp", "lt", "gt", "quot", "apos"].contains(&ent)
            || (ent.starts_with('#') && ent.len() > 1);
        if !known {
            return Err(format!("unknown entity &{ent};"));
        }
        rest = &r[semi + 1..];
    }
    if s.contains('>') && s.contains("]]>") {
        return Err("']]>' in text".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caption() -> Vec<String> {
        vec![
            "produce 1 KiB x 8 partitions, acks=all <test> & \"quotes\"".into(),
            "second".into(),
        ]
    }

    #[test]
    fn latency_plot_is_well_formed_and_labelled() {
        let a: Vec<(f64, f64)> = vec![
            (0.0, 0.5),
            (50.0, 1.0),
            (90.0, 2.0),
            (99.0, 5.0),
            (99.9, 20.0),
            (100.0, 400.0),
        ];
        let b: Vec<(f64, f64)> = vec![(0.0, 1.0), (50.0, 2.0), (99.0, 3.0), (100.0, 4.0)];
        let svg = latency_plot(
            "Latency by percentile",
            &caption(),
            &[
                LatencyCurve {
                    name: "produce ack".into(),
                    curve: &a,
                },
                LatencyCurve {
                    name: "end-to-end".into(),
                    curve: &b,
                },
            ],
            100_000,
        );
        check_well_formed(&svg).unwrap();
        for needle in [
            "Latency by percentile",
            "latency, ms",
            "99.9%",
            "99.999%",
            "produce ack",
            "end-to-end",
            "&lt;test&gt; &amp; &quot;quotes&quot;",
            "percentile",
        ] {
            assert!(svg.contains(needle), "missing {needle}");
        }
        assert_eq!(svg.matches("<polyline").count(), 2);
        // 400 ms max vs 1 ms median: the y axis goes logarithmic.
        assert!(svg.contains("(log scale)"));
    }

    #[test]
    fn throughput_plot_is_well_formed_and_labelled() {
        let p: Vec<(f64, f64)> = (1..=30).map(|t| (t as f64, 100.0 + t as f64)).collect();
        let c: Vec<(f64, f64)> = (1..=30).map(|t| (t as f64, 90.0)).collect();
        let svg = throughput_plot(
            "Throughput",
            &caption(),
            &[
                RateSeries {
                    name: "produce".into(),
                    points: &p,
                },
                RateSeries {
                    name: "consume".into(),
                    points: &c,
                },
            ],
            5.0,
            1024.0,
        );
        check_well_formed(&svg).unwrap();
        for needle in [
            "MB/s",
            "records/s",
            "time since start, s",
            "warm-up",
            "Throughput",
        ] {
            assert!(svg.contains(needle), "missing {needle}");
        }
        // Empty input still gives a valid picture.
        check_well_formed(&throughput_plot("t", &[], &[], 0.0, 0.0)).unwrap();
        check_well_formed(&latency_plot("t", &[], &[], 0)).unwrap();
    }

    #[test]
    fn the_checker_catches_mistakes() {
        assert!(check_well_formed("<svg><g></svg>").is_err());
        assert!(check_well_formed("<svg><text>a & b</text></svg>").is_err());
        assert!(check_well_formed("<svg width=3></svg>").is_err());
        assert!(check_well_formed("<svg></svg><svg></svg>").is_err());
        assert!(check_well_formed("<svg a=\"1\"><g/></svg>").is_ok());
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_step(100.0, 10), 10.0);
        assert_eq!(nice_step(7.0, 6), 2.0);
        assert_eq!(tick_label(1500.0), "1500");
        assert_eq!(tick_label(25_000.0), "25k");
        assert_eq!(tick_label(2_500_000.0), "2.5M");
        assert_eq!(tick_label(0.25), "0.25");
    }
}
