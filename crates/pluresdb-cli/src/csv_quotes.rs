//! Finds a CSV file that ends inside a quoted field. The csv crate reads one without an
//! error: the field runs on to the end of the file (rust-csv issues #252 and #289; neither
//! `csv::Reader` nor `csv_core::Reader` says which state the input ended in), so an import
//! would store the rest of the file as one value.

use std::io::Read;

/// Where the reader is in the CSV syntax, as far as quotes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a field: a quote here opens a quoted field.
    FieldStart,
    /// In a field that did not start with a quote: a quote here is an ordinary character.
    Unquoted,
    /// Inside the quotes of a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: it closed the field, unless another quote
    /// follows (a doubled quote stands for one).
    QuoteInQuoted,
}

/// The UTF-8 byte order mark, which the csv crate skips at the start of the input.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A reader that passes its input through unchanged while following CSV quoting as the csv
/// crate reads it with its defaults (`"` quotes a field and is doubled inside one, `,` ends
/// a field, `\r` or `\n` a record, a leading UTF-8 BOM is skipped), to tell when the input
/// ended inside a quoted field.
pub struct QuoteWatch<R> {
    inner: R,
    state: State,
    /// How many bytes of a BOM the input started with, until it is past the start.
    bom: Option<usize>,
    /// The line being read (counting `\n` as the csv crate does).
    line: u64,
    /// The line the last quoted field started on.
    quote_line: u64,
    /// True once the inner reader reached its end.
    ended: bool,
}

impl<R> QuoteWatch<R> {
    /// Watches what is read from `inner`.
    pub fn new(inner: R) -> QuoteWatch<R> {
        QuoteWatch {
            inner,
            state: State::FieldStart,
            bom: Some(0),
            line: 1,
            quote_line: 1,
            ended: false,
        }
    }

    /// The line the unclosed quoted field starts on, once the input has ended inside it.
    pub fn unclosed_quote(&self) -> Option<u64> {
        (self.ended && self.state == State::Quoted).then_some(self.quote_line)
    }

    fn follow(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(n) = self.bom.filter(|&n| n < BOM.len()) {
                if b == BOM[n] {
                    self.bom = Some(n + 1);
                    continue;
                }
                // Part of a BOM is not skipped: it is text of the first field.
                if n > 0 {
                    self.state = State::Unquoted;
                }
                self.bom = None;
            }
            self.state = match (self.state, b) {
                (State::Quoted, b'"') => State::QuoteInQuoted,
                (State::Quoted, _) | (State::QuoteInQuoted, b'"') => State::Quoted,
                (_, b',' | b'\r' | b'\n') => State::FieldStart,
                (State::FieldStart, b'"') => {
                    self.quote_line = self.line;
                    State::Quoted
                }
                _ => State::Unquoted,
            };
            self.line += u64::from(b == b'\n');
        }
    }
}

impl<R: Read> Read for QuoteWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
        }
        self.follow(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line of the unclosed quoted field `text` ends in, read in pieces of 3 bytes.
    fn unclosed(text: impl AsRef<[u8]>) -> Option<u64> {
        let mut watch = QuoteWatch::new(text.as_ref());
        let mut buf = [0; 3];
        while watch.read(&mut buf).unwrap() > 0 {}
        watch.unclosed_quote()
    }

    #[test]
    fn finds_a_quoted_field_the_input_ends_in() {
        assert_eq!(unclosed("a,b\n1,2\n3,\"open\n"), Some(3));
        assert_eq!(unclosed("a,b\n1,\"x\n\ny\",\"open"), Some(4));
        assert_eq!(
            unclosed("a,b\r\n1,\"a \"\"q\"\" b, c\"\r\n4,\"open"),
            Some(3)
        );
        assert_eq!(unclosed("\"open, \"\"still\"\"\n"), Some(1));
        // A BOM is skipped: the quote after it opens a field.
        assert_eq!(unclosed("\u{feff}\"a\nb,c\n"), Some(1));
        assert_eq!(unclosed("x\n\u{feff}\"a\n"), None);
        assert_eq!(unclosed(b"\xEF\xBB\"a\n"), None, "part of a BOM is text");
        for closed in [
            "a,b\n1,\"x\"\n",
            "a,b\n1,\"x, \"\"y\"\"\"",
            "a,b\n1,\"\"",
            // A quote inside an unquoted field is an ordinary character.
            "a,b\n1,x\"y\n",
            "a,b\n1,\"x\"y\"\n",
            "\u{feff}\"a,\"b\",c\n",
            "",
        ] {
            assert_eq!(unclosed(closed), None, "{closed:?}");
        }
    }

    #[test]
    fn says_nothing_before_the_end() {
        let mut watch = QuoteWatch::new(&b"a,\"open"[..]);
        let mut buf = [0; 64];
        assert_eq!(watch.read(&mut buf).unwrap(), 7);
        assert_eq!(watch.unclosed_quote(), None);
        assert_eq!(watch.read(&mut buf).unwrap(), 0);
        assert_eq!(watch.unclosed_quote(), Some(1));
    }
}
