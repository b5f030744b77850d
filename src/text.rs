//! Showing text that came from elsewhere. Names chosen by a seed (the
//! manifest's root name and entry paths), close reasons and messages sent by
//! peers, and paths built from them are printed to a terminal and to logs;
//! a control character in them (ESC starts a terminal escape sequence, a
//! newline forges a log line, a bidi override reorders what is shown) must
//! never reach the output raw. `escape` is the one function every such
//! print goes through.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

/// `s` with every control character (C0, DEL, C1) and every invisible
/// formatting character (bidi overrides and isolates, zero-width marks,
/// line and paragraph separators, BOM) written as a Rust escape: `\n`,
/// `\t`, `\r`, or `\u{1b}`. Plain text is returned as it is.
///
/// Backslashes are kept as they are, so escaping twice changes nothing
/// (an error message escaped where it is made and again where it is
/// printed reads the same). Manifest names cannot hold a backslash
/// (`manifest::path`), so a name shown with `\u{1b}` had an ESC there.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// A path for display: lossy UTF-8, escaped.
pub fn path(p: &Path) -> String {
    escape(&p.to_string_lossy()).into_owned()
}

/// Displays its string escaped (for `format!` arguments).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// Bytes as lower-case hex (peer ids, hashes).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        for s in ["db-2026-11-21", "données/été.bin", "a b", "日本語", ""] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn controls_and_invisible_marks_are_escaped() {
        assert_eq!(escape("a\u{1b}[31mred\nb"), "a\\u{1b}[31mred\\nb");
        assert_eq!(escape("x\ty\rz\u{7f}"), "x\\ty\\rz\\u{7f}");
        assert_eq!(escape("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        // idempotent
        let once = escape("a\u{1b}b\nc\u{202e}").into_owned();
        assert_eq!(escape(&once), once);
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let e = escape(&c.to_string()).into_owned();
            assert!(!e.chars().any(|x| x.is_control()), "{c:?} -> {e:?}");
        }
    }
}
