//! The progress line of the long commands (`restore`, `dump`): one line on
//! stderr, redrawn in place with `\r` at most five times a second, and only
//! where a person reads it: stderr is a terminal, logs are not JSON and
//! `--no-progress` was not given. Scripts, pipes and log collectors never
//! see it; the JSON result on stdout is the same either way.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backstop_core::telemetry::LogFormat;

/// The least time between two redraws.
const REDRAW: Duration = Duration::from_millis(200);

/// Whether to show a progress line.
pub(crate) fn wanted(no_progress: bool) -> bool {
    !no_progress && std::io::stderr().is_terminal() && LogFormat::detect() != LogFormat::Json
}

/// How much work is expected, for the percentage and the ETA.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Total {
    /// Known exactly (a download of a known size).
    Exact(u64),
    /// An estimate (shown with `~`; once passed, no percentage or ETA).
    About(u64),
    Unknown,
}

/// A one-line display on stderr: done / total, rate, elapsed, ETA.
pub(crate) struct Line {
    state: Mutex<State>,
}

struct State {
    label: String,
    total: Total,
    /// What `done` counts (`read`), after the amount; may be empty.
    noun: &'static str,
    started: Instant,
    last_draw: Option<Instant>,
    /// A line is on screen without its newline.
    drawn: bool,
    /// [`Line::end`] ran: later draws (a late tick) are dropped.
    finished: bool,
    /// The label went on a line of its own (see [`layout`]).
    compact: bool,
}

/// Columns of the terminal on stderr; `None` when it does not say.
fn columns() -> Option<usize> {
    #[cfg(unix)]
    {
        // SAFETY: winsize is plain integers; all zeroes is a valid value.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize into the valid `ws`.
        let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 {
            return Some(ws.ws_col.into());
        }
    }
    None
}

/// What to write (after `\r` and clearing the line) for `label` and `text`
/// on a terminal `columns` wide. A line that wraps cannot be redrawn in
/// place (`\r` goes back to its last row only), so when label and text do
/// not fit, the label goes on a line of its own, once (`compact` records
/// it), and the text alone follows, cut to the width.
fn layout(label: &str, text: &str, columns: Option<usize>, compact: &mut bool) -> String {
    let full = format!("{label}: {text}");
    let Some(columns) = columns else {
        return full;
    };
    if !*compact && full.chars().count() < columns {
        return full;
    }
    let mut out = if *compact {
        String::new()
    } else {
        *compact = true;
        format!("{label}:\n")
    };
    out.extend(text.chars().take(columns.saturating_sub(1)));
    out
}

/// Bytes in binary units, one decimal (`12.3 MiB`, `512 B`): the catalog's
/// format, so `list` and the progress lines read alike.
pub(crate) fn human(bytes: f64) -> String {
    backstop_core::catalog::format_bytes(bytes.max(0.0) as u64)
}

/// Seconds as `42s`, `3m07s`, `2h05m`.
pub(crate) fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The text of a line: `{done}[ / {total} ({pct}%)][ {noun}], {rate}/s[,
/// ETA {eta}]{extra}, {elapsed} elapsed`: what a narrow terminal cuts off
/// comes last.
fn render(total: Total, done: u64, secs: f64, noun: &str, extra: &str) -> String {
    let rate = done as f64 / secs.max(1e-3);
    let (total, approx) = match total {
        Total::Exact(t) => (Some(t), ""),
        Total::About(t) if t >= done => (Some(t), "~"),
        Total::About(_) | Total::Unknown => (None, ""),
    };
    let mut line = human(done as f64);
    if let Some(t) = total {
        let pct = if t > 0 {
            done as f64 * 100.0 / t as f64
        } else {
            0.0
        };
        line += &format!(" / {approx}{} ({pct:.0}%)", human(t as f64));
    }
    if !noun.is_empty() {
        line += &format!(" {noun}");
    }
    line += &format!(", {}/s", human(rate));
    if let Some(t) = total {
        let eta = if rate > 0.0 && t > done {
            duration((t - done) as f64 / rate)
        } else {
            "-".into()
        };
        line += &format!(", ETA {eta}");
    }
    line += &format!("{extra}, {} elapsed", duration(secs));
    line
}

impl Line {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                label: String::new(),
                total: Total::Unknown,
                noun: "",
                started: Instant::now(),
                last_draw: None,
                drawn: false,
                finished: false,
                compact: false,
            }),
        }
    }

    /// A phase begins: its name on a line of its own.
    pub(crate) fn note_phase(&self, phase: &str) {
        let mut s = self.state.lock().expect("progress");
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}{phase}...", if s.drawn { "\r\x1b[K" } else { "" });
        s.drawn = false;
    }

    /// The measured work starts now; draws its first line, with `extra`
    /// as [`Self::draw`] does. `noun` says what the amount done counts.
    pub(crate) fn begin(&self, label: String, total: Total, noun: &'static str, extra: &str) {
        let mut s = self.state.lock().expect("progress");
        *s = State {
            label,
            total,
            noun,
            started: Instant::now(),
            last_draw: None,
            drawn: false,
            finished: false,
            compact: false,
        };
        Self::draw_locked(&mut s, 0, extra, true);
    }

    /// `done` so far, `extra` after the rate and ETA; skipped within
    /// [`REDRAW`] of the last draw.
    pub(crate) fn draw(&self, done: u64, extra: &str) {
        let mut s = self.state.lock().expect("progress");
        Self::draw_locked(&mut s, done, extra, false);
    }

    fn draw_locked(s: &mut State, done: u64, extra: &str, force: bool) {
        let now = Instant::now();
        if s.finished || (!force && s.last_draw.is_some_and(|t| now - t < REDRAW)) {
            return;
        }
        s.last_draw = Some(now);
        let secs = (now - s.started).as_secs_f64();
        let text = render(s.total, done, secs, s.noun, extra);
        let text = layout(&s.label, &text, columns(), &mut s.compact);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{text}");
        let _ = err.flush();
        s.drawn = true;
    }

    /// The work ended: when a line is on screen, it is replaced by
    /// `{label}: {what} in {elapsed}` (without the label when it is on the
    /// line above) and a newline.
    pub(crate) fn end(&self, what: &str) {
        let mut s = self.state.lock().expect("progress");
        s.finished = true;
        if s.drawn {
            let elapsed = duration(s.started.elapsed().as_secs_f64());
            let label = if s.compact {
                String::new()
            } else {
                format!("{}: ", s.label)
            };
            let _ = writeln!(
                std::io::stderr().lock(),
                "\r\x1b[K{label}{what} in {elapsed}"
            );
            s.drawn = false;
        }
    }

    /// The total given to [`Self::begin`].
    pub(crate) fn expected(&self) -> Total {
        self.state.lock().expect("progress").total
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_the_total_only_while_it_means_something() {
        let mib = 1 << 20;
        assert_eq!(
            render(Total::Exact(4 * mib), mib, 2.0, "", ""),
            "1.0 MiB / 4.0 MiB (25%), 512.0 KiB/s, ETA 6s, 2s elapsed"
        );
        assert_eq!(
            render(Total::About(4 * mib), mib, 2.0, "read", ", 9 B up"),
            "1.0 MiB / ~4.0 MiB (25%) read, 512.0 KiB/s, ETA 6s, 9 B up, 2s elapsed"
        );
        // An estimate that was passed says nothing any more.
        assert_eq!(
            render(Total::About(mib), 2 * mib, 2.0, "read", ""),
            "2.0 MiB read, 1.0 MiB/s, 2s elapsed"
        );
        assert_eq!(
            render(Total::Unknown, 0, 0.0, "", ""),
            "0 B, 0 B/s, 0s elapsed"
        );
        assert_eq!(duration(3725.0), "1h02m");
    }

    #[test]
    fn a_line_too_wide_for_the_terminal_loses_its_label_and_is_cut() {
        let mut compact = false;
        let text = "1.0 MiB / 4.0 MiB (25%)";
        assert_eq!(
            layout("dumping x", text, None, &mut compact),
            "dumping x: 1.0 MiB / 4.0 MiB (25%)"
        );
        assert_eq!(
            layout("dumping x", text, Some(80), &mut compact),
            "dumping x: 1.0 MiB / 4.0 MiB (25%)"
        );
        assert!(!compact);
        assert_eq!(
            layout("dumping x", text, Some(20), &mut compact),
            "dumping x:\n1.0 MiB / 4.0 MiB ("
        );
        assert!(compact);
        // Once on its own line, the label is not repeated, even if the
        // terminal grows.
        assert_eq!(layout("dumping x", text, Some(80), &mut compact), text);
        assert_eq!(duration(125.0), "2m05s");
    }
}
