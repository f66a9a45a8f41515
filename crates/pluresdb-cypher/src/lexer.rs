//! Splits query text into tokens with byte spans. Keywords are plain identifiers here; the
//! parser recognises them case-insensitively.

use crate::ast::Span;
use crate::error::{CypherError, ErrorKind, Result};

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A name or keyword (`quoted` is true for backquoted names, which are never keywords).
    Ident {
        name: String,
        quoted: bool,
    },
    /// An integer literal's digits (converted by the parser, which knows about unary minus).
    Int(String),
    Float(f64),
    Str(String),
    /// `$name` or `$0`.
    Param(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Dot,
    DotDot,
    Colon,
    Semicolon,
    Pipe,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Plus,
    PlusEq,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    RegexMatch,
    Eof,
}

/// A token and where it is.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

impl Token {
    /// How an error message names this token: its text in quotes, or "end of input".
    pub fn describe(&self, src: &str) -> String {
        if self.tok == Tok::Eof {
            return "end of input".into();
        }
        let text = &src[self.span.start..self.span.end];
        let short: String = text.chars().take(40).collect();
        if short.len() < text.len() {
            format!("'{short}...'")
        } else {
            format!("'{short}'")
        }
    }
}

/// Tokenizes `src`; the last token is [`Tok::Eof`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>> {
    let mut lexer = Lexer {
        src,
        bytes: src.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        lexer.skip_trivia()?;
        let start = lexer.pos;
        if start >= src.len() {
            out.push(Token {
                tok: Tok::Eof,
                span: Span::new(start, start),
            });
            return Ok(out);
        }
        let tok = lexer.next_token()?;
        out.push(Token {
            tok,
            span: Span::new(start, lexer.pos),
        });
    }
}

struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn err(&self, offset: usize, message: impl std::fmt::Display) -> CypherError {
        CypherError::at(ErrorKind::Syntax, message, self.src, offset)
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn skip_trivia(&mut self) -> Result<()> {
        loop {
            let Some(c) = self.src[self.pos..].chars().next() else {
                return Ok(());
            };
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else if self.src[self.pos..].starts_with("//") {
                self.pos = self.src[self.pos..]
                    .find('\n')
                    .map_or(self.src.len(), |i| self.pos + i);
            } else if self.src[self.pos..].starts_with("/*") {
                match self.src[self.pos + 2..].find("*/") {
                    Some(i) => self.pos += 2 + i + 2,
                    None => return Err(self.err(self.pos, "unterminated comment '/*'")),
                }
            } else {
                return Ok(());
            }
        }
    }

    fn next_token(&mut self) -> Result<Tok> {
        let start = self.pos;
        let c = self.src[start..].chars().next().expect("not at end");
        let two = |l: &Lexer<'_>, b: u8| l.peek(1) == Some(b);
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '[' => (Tok::LBracket, 1),
            ']' => (Tok::RBracket, 1),
            '{' => (Tok::LBrace, 1),
            '}' => (Tok::RBrace, 1),
            ',' => (Tok::Comma, 1),
            ':' => (Tok::Colon, 1),
            ';' => (Tok::Semicolon, 1),
            '|' => (Tok::Pipe, 1),
            '*' => (Tok::Star, 1),
            '/' => (Tok::Slash, 1),
            '%' => (Tok::Percent, 1),
            '^' => (Tok::Caret, 1),
            '-' => (Tok::Minus, 1),
            '+' if two(self, b'=') => (Tok::PlusEq, 2),
            '+' => (Tok::Plus, 1),
            '=' if two(self, b'~') => (Tok::RegexMatch, 2),
            '=' => (Tok::Eq, 1),
            '!' if two(self, b'=') => (Tok::Ne, 2),
            '<' if two(self, b'>') => (Tok::Ne, 2),
            '<' if two(self, b'=') => (Tok::Le, 2),
            '<' => (Tok::Lt, 1),
            '>' if two(self, b'=') => (Tok::Ge, 2),
            '>' => (Tok::Gt, 1),
            '.' if two(self, b'.') => (Tok::DotDot, 2),
            '.' if self.peek(1).is_some_and(|b| b.is_ascii_digit()) => return self.number(),
            '.' => (Tok::Dot, 1),
            '0'..='9' => return self.number(),
            '\'' | '"' => return self.string(c),
            '`' => {
                let name = self.backquoted()?;
                return Ok(Tok::Ident { name, quoted: true });
            }
            '$' => {
                self.pos += 1;
                let name = if self.peek(0) == Some(b'`') {
                    self.backquoted()?
                } else {
                    let name = self.word();
                    if name.is_empty() {
                        return Err(self.err(start, "expected a parameter name after '$'"));
                    }
                    name
                };
                return Ok(Tok::Param(name));
            }
            c if is_ident_start(c) => {
                let name = self.word();
                return Ok(Tok::Ident {
                    name,
                    quoted: false,
                });
            }
            other => return Err(self.err(start, format!("unexpected character '{other}'"))),
        };
        self.pos += len;
        Ok(tok)
    }

    /// Letters, digits and underscores from the current position.
    fn word(&mut self) -> String {
        let start = self.pos;
        for c in self.src[start..].chars() {
            if is_ident_start(c) || c.is_ascii_digit() || c.is_alphanumeric() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        self.src[start..self.pos].to_owned()
    }

    fn backquoted(&mut self) -> Result<String> {
        let start = self.pos;
        self.pos += 1;
        let mut name = String::new();
        loop {
            match self.src[self.pos..].find('`') {
                None => return Err(self.err(start, "unterminated backquoted name")),
                Some(i) => {
                    name.push_str(&self.src[self.pos..self.pos + i]);
                    self.pos += i + 1;
                    if self.peek(0) == Some(b'`') {
                        name.push('`');
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
            }
        }
        if name.is_empty() {
            return Err(self.err(start, "a backquoted name must not be empty"));
        }
        Ok(name)
    }

    fn number(&mut self) -> Result<Tok> {
        let start = self.pos;
        let digits = |l: &mut Lexer<'_>| {
            while l.peek(0).is_some_and(|b| b.is_ascii_digit() || b == b'_') {
                l.pos += 1;
            }
        };
        if self.peek(0) == Some(b'0') && matches!(self.peek(1), Some(b'x' | b'X')) {
            self.pos += 2;
            while self.peek(0).is_some_and(|b| b.is_ascii_hexdigit()) {
                self.pos += 1;
            }
            let hex = &self.src[start + 2..self.pos];
            let value = u64::from_str_radix(hex, 16)
                .map_err(|_| self.err(start, "invalid hexadecimal integer literal"))?;
            self.check_number_end(start)?;
            return Ok(Tok::Int(value.to_string()));
        }
        digits(self);
        let mut float = false;
        if self.peek(0) == Some(b'.') && self.peek(1).is_some_and(|b| b.is_ascii_digit()) {
            float = true;
            self.pos += 1;
            digits(self);
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let save = self.pos;
            self.pos += 1;
            if matches!(self.peek(0), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                float = true;
                digits(self);
            } else {
                self.pos = save;
            }
        }
        self.check_number_end(start)?;
        let text: String = self.src[start..self.pos]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        if float {
            let value: f64 = text
                .parse()
                .map_err(|_| self.err(start, "invalid number literal"))?;
            Ok(Tok::Float(value))
        } else {
            Ok(Tok::Int(text))
        }
    }

    /// A number must not run into a name (`12abc`).
    fn check_number_end(&self, start: usize) -> Result<()> {
        match self.src[self.pos..].chars().next() {
            Some(c) if is_ident_start(c) => Err(self.err(
                start,
                format!("invalid number literal '{}{c}'", &self.src[start..self.pos]),
            )),
            _ => Ok(()),
        }
    }

    fn string(&mut self, quote: char) -> Result<Tok> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.src[self.pos..].chars().next() else {
                return Err(self.err(start, "unterminated string literal"));
            };
            self.pos += c.len_utf8();
            if c == quote {
                return Ok(Tok::Str(out));
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let esc_at = self.pos - 1;
            let Some(e) = self.src[self.pos..].chars().next() else {
                return Err(self.err(start, "unterminated string literal"));
            };
            self.pos += e.len_utf8();
            match e {
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                '"' => out.push('"'),
                '`' => out.push('`'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' | 'U' => {
                    let len = if e == 'u' { 4 } else { 8 };
                    let hex = self.src.get(self.pos..self.pos + len).unwrap_or("");
                    let ch = (hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                        .then(|| u32::from_str_radix(hex, 16).ok().and_then(char::from_u32))
                        .flatten()
                        .ok_or_else(|| {
                            self.err(
                                esc_at,
                                format!("invalid unicode escape; use \\{e} and {len} hex digits"),
                            )
                        })?;
                    out.push(ch);
                    self.pos += len;
                }
                other => {
                    return Err(self.err(esc_at, format!("invalid escape sequence '\\{other}'")));
                }
            }
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        tokenize(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn ranges_are_not_floats() {
        assert_eq!(
            toks("*1..3"),
            vec![
                Tok::Star,
                Tok::Int("1".into()),
                Tok::DotDot,
                Tok::Int("3".into()),
                Tok::Eof
            ]
        );
        assert_eq!(toks("1.5e3"), vec![Tok::Float(1500.0), Tok::Eof]);
    }

    #[test]
    fn arrows_are_single_chars() {
        assert_eq!(
            toks("<-->"),
            vec![Tok::Lt, Tok::Minus, Tok::Minus, Tok::Gt, Tok::Eof]
        );
        assert_eq!(toks("a<>b").get(1), Some(&Tok::Ne));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            toks(r#"'it\'s' "a\"b" '\u00e9\n'"#),
            vec![
                Tok::Str("it's".into()),
                Tok::Str("a\"b".into()),
                Tok::Str("é\n".into()),
                Tok::Eof
            ]
        );
        let err = tokenize("RETURN 'abc").unwrap_err();
        assert_eq!(err.position().unwrap().column, 8);
        assert!(err.message().starts_with("unterminated string literal"));
    }

    #[test]
    fn comments_and_backquotes() {
        assert_eq!(
            toks("// hi\n`a``b` /* x */ $p"),
            vec![
                Tok::Ident {
                    name: "a`b".into(),
                    quoted: true
                },
                Tok::Param("p".into()),
                Tok::Eof
            ]
        );
    }
}
