//! Text a container controls, made safe to show: on a terminal an escape sequence can set
//! the window title, rewrite the screen or (OSC 52) the clipboard, and in a log a newline
//! can forge a line.

/// `s` with every control character (C0, DEL, C1) written as `\xNN` / `\u{NNNN}`, and a
/// backslash doubled, so what is shown is exactly what was sent and nothing more.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if ('\u{80}'..='\u{9f}').contains(&c) => {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Bytes that may not even be UTF-8, shown the same way.
pub fn escape_bytes(b: &[u8]) -> String {
    escape_controls(&String::from_utf8_lossy(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_shown_not_run() {
        assert_eq!(
            escape_controls("ok\x1b]0;pwned\x07\x1b[2J\r\nnext\u{9b}31m\\"),
            "ok\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\x0anext\\u{009b}31m\\\\"
        );
        assert_eq!(
            escape_controls("plain text, ünïcode"),
            "plain text, ünïcode"
        );
        assert_eq!(escape_bytes(b"a\xffb\x00"), "a\u{fffd}b\\x00");
    }

    proptest::proptest! {
        #[test]
        fn no_control_character_survives(s in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}]*") {
            let out = escape_controls(&s);
            proptest::prop_assert!(!out.chars().any(|c| c.is_control()));
        }
    }
}
