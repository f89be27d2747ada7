//! Log lines on stderr, one line per message whatever a message holds.
//!
//! Messages carry values from requests (event names, ids, statuses, the
//! whole body with `log_payloads`), so every control character in a
//! message is written as an escape (`\n`, `\r`, `\t`, `\x1b`, `\x7f`,
//! `\u{9b}`): a sender cannot forge a log line or reach a terminal with
//! ESC/OSC sequences. Codex's own colours are written only to a terminal.
//!
//! Under systemd, when stderr is the journal (`JOURNAL_STREAM` names
//! stderr's device and inode), a line starts with its syslog priority
//! (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace) and
//! carries no timestamp of its own (the journal keeps one), so
//! `journalctl -p warning` selects by level.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use env_logger::fmt::WriteStyle;
use log::Level;

/// Environment variable systemd sets to `<device>:<inode>` of the journal
/// stream it connects a service's stdout and stderr to.
pub const ENV_JOURNAL_STREAM: &str = "JOURNAL_STREAM";

/// How a line begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `<6>[codex::module] message`.
    Journal,
    /// `[2026-01-15T10:30:00Z INFO  codex::module] message`.
    Plain { colour: bool },
}

/// Installs the logger: everything passes the filter unless `RUST_LOG`
/// narrows it, and `[server] log_level` (set after the configuration is
/// read, and by a reload) is the level in force.
pub fn init() {
    let format = if stderr_is_journal() {
        Format::Journal
    } else {
        Format::Plain {
            colour: std::io::stderr().is_terminal(),
        }
    };
    let env = env_logger::Env::default().default_filter_or("trace");
    let mut builder = env_logger::Builder::from_env(env);
    if format != (Format::Plain { colour: true }) {
        builder.write_style(WriteStyle::Never);
    }
    builder.format(move |buf, record| {
        match format {
            Format::Journal => write!(buf, "<{}>[{}] ", priority(record.level()), record.target())?,
            Format::Plain { .. } => {
                // Empty unless colours are on (`WriteStyle::Never` otherwise).
                let style = buf.default_level_style(record.level());
                write!(
                    buf,
                    "[{} {style}{:<5}{style:#} {}] ",
                    buf.timestamp_seconds(),
                    record.level(),
                    record.target()
                )?;
            }
        }
        write_escaped(buf, record.args())?;
        writeln!(buf)
    });
    builder.init();
    log::set_max_level(log::LevelFilter::Info);
}

/// The syslog priority of a level, as journald reads it from a line's start.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// True when `JOURNAL_STREAM` names the file stderr is: set by systemd for
/// the service itself, and not true for a program it starts with stderr
/// elsewhere (which inherits the variable).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os(ENV_JOURNAL_STREAM) else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(device), Ok(inode)) = (device.parse::<u64>(), inode.parse::<u64>()) else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(stderr)
        .metadata()
        .is_ok_and(|meta| meta.dev() == device && meta.ino() == inode)
}

/// Writes `args` to `out` with every control character escaped.
fn write_escaped(out: &mut dyn Write, args: &fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut escaper = Escaper { out, error: None };
    match fmt::write(&mut escaper, *args) {
        Ok(()) => Ok(()),
        Err(_) => Err(escaper
            .error
            .unwrap_or_else(|| std::io::Error::other("a log message failed to format"))),
    }
}

/// A `fmt::Write` that escapes control characters on their way to `out`.
struct Escaper<'a> {
    out: &'a mut dyn Write,
    error: Option<std::io::Error>,
}

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut escaped = String::new();
        let result = escape_into(text, &mut escaped, &mut *self.out);
        result.map_err(|error| {
            self.error = Some(error);
            fmt::Error
        })
    }
}

/// Copies `text` to `out`, runs of plain characters as they are and each
/// character that needs it as its escape (built in `scratch`).
fn escape_into(text: &str, scratch: &mut String, out: &mut dyn Write) -> std::io::Result<()> {
    let mut plain_from = 0;
    for (at, c) in text.char_indices() {
        if !needs_escape(c) {
            continue;
        }
        out.write_all(&text.as_bytes()[plain_from..at])?;
        scratch.clear();
        push_escape(c, scratch);
        out.write_all(scratch.as_bytes())?;
        plain_from = at + c.len_utf8();
    }
    out.write_all(&text.as_bytes()[plain_from..])
}

/// Control characters (C0, DEL, C1), and the characters that end a line
/// or reorder text for some readers (line and paragraph separators,
/// bidirectional overrides).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escape(c: char, out: &mut String) {
    use std::fmt::Write as _;
    let _ = match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        '\0'..='\x7f' => write!(out, "\\x{:02x}", c as u32),
        _ => write!(out, "\\u{{{:x}}}", c as u32),
    };
}

/// `text` with every control character escaped, as a log line shows it.
#[cfg(test)]
fn escape(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    // Writing to a Vec cannot fail.
    let _ = escape_into(text, &mut String::new(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(escape("a\r\nINFO forged\tb"), "a\\r\\nINFO forged\\tb");
        assert_eq!(
            escape("\x1b]0;title\x07\x1b[31m"),
            "\\x1b]0;title\\x07\\x1b[31m"
        );
        assert_eq!(escape("del\x7f nul\0"), "del\\x7f nul\\x00");
        assert_eq!(escape("csi\u{9b}31m"), "csi\\u{9b}31m");
        assert_eq!(escape("a\u{2028}b\u{202e}c"), "a\\u{2028}b\\u{202e}c");
    }

    #[test]
    fn formatted_messages_are_escaped_as_a_whole() {
        let mut out = Vec::new();
        let value = "x\ny";
        write_escaped(&mut out, &format_args!("ticket={value} event={}", "a\rb")).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ticket=x\\ny event=a\\rb");
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        let priorities: Vec<u8> = [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ]
        .into_iter()
        .map(priority)
        .collect();
        assert_eq!(priorities, [3, 4, 6, 7, 7]);
    }
}
