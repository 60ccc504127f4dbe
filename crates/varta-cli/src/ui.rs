//! Terminal output shared by the subcommands: colour choice, aligned
//! tables, durations and the standard-output writer.
//!
//! Colour goes through `anstream`, which strips the escape codes when
//! standard output is not a terminal, when `NO_COLOR` is set, or with
//! `--color never` (and keeps them with `--color always` or
//! `CLICOLOR_FORCE`).

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use clap::ValueEnum;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ColorWhen {
    /// Colour on a terminal, unless NO_COLOR is set.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

impl ColorWhen {
    fn choice(self) -> anstream::ColorChoice {
        match self {
            ColorWhen::Auto => anstream::ColorChoice::Auto,
            ColorWhen::Always => anstream::ColorChoice::Always,
            ColorWhen::Never => anstream::ColorChoice::Never,
        }
    }
}

/// Standard output, colour-aware.
pub type Out = anstream::AutoStream<io::StdoutLock<'static>>;

/// Standard output with the colour policy of `when`.
pub fn stdout(when: ColorWhen) -> Out {
    anstream::AutoStream::new(io::stdout().lock(), when.choice())
}

/// Header style.
pub const HEAD: Style = Style::new().bold();
/// Muted text (absent values, hints).
pub const DIM: Style = Style::new().dimmed();

/// The colour of an agent state (or event kind) word.
pub fn state_style(state: &str) -> Style {
    let fg = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match state {
        "alive" | "ok" | "recovered" | "applied" => fg(AnsiColor::Green),
        "stalled" | "stall" | "critical" | "failed" | "dropped" => fg(AnsiColor::Red).bold(),
        "given_up" => fg(AnsiColor::Magenta).bold(),
        "missing" | "degraded" => fg(AnsiColor::Yellow),
        "exited" | "exit" | "unchanged" => DIM,
        _ => Style::new(),
    }
}

/// `text` in `style` (escape codes are stripped later when colour is off).
pub fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// A duration in milliseconds, short and human: `850ms`, `5.2s`,
/// `3m12s`, `2h05m`, `3d04h`.
pub fn duration_ms(ms: u64) -> String {
    const S: u64 = 1000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    const D: u64 = 24 * H;
    match ms {
        0..S => format!("{ms}ms"),
        S..M => format!("{}.{}s", ms / S, ms % S / 100),
        M..H => format!("{}m{:02}s", ms / M, ms % M / S),
        H..D => format!("{}h{:02}m", ms / H, ms % H / M),
        _ => format!("{}d{:02}h", ms / D, ms % D / H),
    }
}

/// An optional duration, `-` when absent.
pub fn opt_duration_ms(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), duration_ms)
}

/// A wall-clock time in milliseconds since the epoch, as RFC 3339 UTC with
/// milliseconds (no time-zone database needed).
pub fn unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A value or `-`.
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// One table cell: text and the style it is shown in.
pub struct Cell {
    text: String,
    style: Style,
}

impl Cell {
    /// A plain cell.
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            style: Style::new(),
        }
    }

    /// The cell's text, without style.
    #[cfg(test)]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A styled cell.
    pub fn styled(text: impl Into<String>, style: Style) -> Cell {
        Cell {
            text: text.into(),
            style,
        }
    }
}

/// A column-aligned table printed a batch of rows at a time, so a listing
/// of a million agents is never held in memory. Column widths grow to fit
/// each batch (and never shrink), so rows of one batch always line up.
pub struct Table {
    headers: Vec<&'static str>,
    widths: Vec<usize>,
    header_done: bool,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            widths: headers.iter().map(|h| h.chars().count()).collect(),
            headers: headers.to_vec(),
            header_done: false,
        }
    }

    /// Prints `rows` (the header first, the first time). The last column is
    /// not padded.
    pub fn print(&mut self, out: &mut impl Write, rows: &[Vec<Cell>]) -> io::Result<()> {
        for row in rows {
            for (w, c) in self.widths.iter_mut().zip(row) {
                *w = (*w).max(c.text.chars().count());
            }
        }
        if !self.header_done {
            self.header_done = true;
            let cells: Vec<Cell> = self
                .headers
                .iter()
                .map(|h| Cell::styled(*h, HEAD))
                .collect();
            self.line(out, &cells)?;
        }
        for row in rows {
            self.line(out, row)?;
        }
        Ok(())
    }

    fn line(&self, out: &mut impl Write, row: &[Cell]) -> io::Result<()> {
        let mut s = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&paint(c.style, &c.text));
            if i + 1 < row.len() {
                let pad = self.widths[i].saturating_sub(c.text.chars().count());
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{s}")
    }
}

/// True for the error a closed pipe (`varta agents | head`) produces:
/// the reader went away, which is not a failure of ours.
pub fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short_and_human() {
        assert_eq!(duration_ms(0), "0ms");
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(5230), "5.2s");
        assert_eq!(duration_ms(59_999), "59.9s");
        assert_eq!(duration_ms(192_000), "3m12s");
        assert_eq!(duration_ms(2 * 3_600_000 + 5 * 60_000), "2h05m");
        assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
        assert_eq!(opt_duration_ms(None), "-");
    }

    #[test]
    fn wall_clock_is_rfc3339_utc() {
        assert_eq!(unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(unix_ms(1_764_530_000_123), "2025-11-30T19:13:20.123Z");
        assert_eq!(unix_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn table_aligns_columns_and_leaves_the_last_unpadded() {
        let mut t = Table::new(&["PID", "NAME", "STATE"]);
        let mut out = Vec::new();
        let rows = vec![
            vec![
                Cell::plain("7"),
                Cell::plain("nginx.service"),
                Cell::plain("alive"),
            ],
            vec![
                Cell::plain("12345"),
                Cell::plain("a"),
                Cell::plain("stalled"),
            ],
        ];
        t.print(&mut out, &rows).unwrap();
        let text = anstream::adapter::strip_str(std::str::from_utf8(&out).unwrap()).to_string();
        assert_eq!(
            text,
            "PID    NAME           STATE\n7      nginx.service  alive\n12345  a              stalled\n"
        );
    }

    #[test]
    fn styles_wrap_text_in_escape_codes() {
        let s = paint(state_style("stalled"), "stalled");
        assert!(s.starts_with("\x1b["), "{s:?}");
        assert_eq!(anstream::adapter::strip_str(&s).to_string(), "stalled");
    }
}
