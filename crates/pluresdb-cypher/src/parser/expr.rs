//! Expressions, by precedence climbing. Loosest first: `OR`, `XOR`, `AND`, `NOT`,
//! comparisons (chained like `a < b < c`), `STARTS WITH` / `ENDS WITH` / `CONTAINS` / `IN` /
//! `IS [NOT] NULL`, `+ -`, `* / %`, `^`, unary `+ -`, then property access, indexing and
//! label tests. Nesting and chaining are bounded so that hostile input cannot overflow the
//! stack.

use super::{Parser, is_reserved};
use crate::ast::*;
use crate::error::Result;
use crate::lexer::Tok;

/// The deepest expression nesting accepted (parentheses, lists, maps, calls, NOT, signs).
const MAX_DEPTH: usize = 64;

/// The most chained operators and lookups in one expression.
const MAX_LINKS: usize = 250;

/// An infix operator.
#[derive(Clone, Copy)]
enum Infix {
    Binary(BinaryOp),
    IsNull,
}

const PREC_NOT: u8 = 4;
const PREC_COMPARISON: u8 = 5;
const PREC_PREDICATE: u8 = 6;

/// Binding strength of a binary operator (higher binds tighter).
fn prec_of(op: BinaryOp) -> u8 {
    match op {
        BinaryOp::Or => 1,
        BinaryOp::Xor => 2,
        BinaryOp::And => 3,
        BinaryOp::Eq
        | BinaryOp::Ne
        | BinaryOp::Lt
        | BinaryOp::Gt
        | BinaryOp::Le
        | BinaryOp::Ge
        | BinaryOp::RegexMatch => PREC_COMPARISON,
        BinaryOp::StartsWith | BinaryOp::EndsWith | BinaryOp::Contains | BinaryOp::In => {
            PREC_PREDICATE
        }
        BinaryOp::Add | BinaryOp::Sub => 7,
        BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 8,
        BinaryOp::Pow => 9,
    }
}

impl Parser<'_> {
    // ---- expressions ----
    //
    // Precedence climbing, loosest first: OR, XOR, AND, NOT, comparisons (chained like
    // `a < b < c`), STARTS WITH / ENDS WITH / CONTAINS / IN / IS [NOT] NULL, + -, * / %, ^,
    // unary + -, then property access, indexing and label tests.

    pub(super) fn expr(&mut self) -> Result<Expr> {
        let base = self.depth;
        if base == 0 {
            self.links = 0;
        }
        let result = self.enter().and_then(|()| self.binary(0));
        self.depth = base;
        result
    }

    /// One more chained operator; an error past [`MAX_LINKS`].
    pub(super) fn link(&mut self) -> Result<()> {
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(self.error_at(
                self.peek().span.start,
                format!(
                    "the expression chains more than {MAX_LINKS} operators; split it up or use \
                     IN with a list"
                ),
            ));
        }
        Ok(())
    }

    /// One level deeper; an error past [`MAX_DEPTH`].
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(
                self.peek().span.start,
                format!("the expression nests more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    /// The infix operator at the current token, with its precedence and token count.
    fn infix(&self) -> Option<(Infix, u8, usize)> {
        let op = |b| Some((Infix::Binary(b), prec_of(b), 1));
        match &self.peek().tok {
            Tok::Eq => op(BinaryOp::Eq),
            Tok::Ne => op(BinaryOp::Ne),
            Tok::Lt => op(BinaryOp::Lt),
            Tok::Gt => op(BinaryOp::Gt),
            Tok::Le => op(BinaryOp::Le),
            Tok::Ge => op(BinaryOp::Ge),
            Tok::RegexMatch => op(BinaryOp::RegexMatch),
            Tok::Plus => op(BinaryOp::Add),
            Tok::Minus => op(BinaryOp::Sub),
            Tok::Star => op(BinaryOp::Mul),
            Tok::Slash => op(BinaryOp::Div),
            Tok::Percent => op(BinaryOp::Mod),
            Tok::Caret => op(BinaryOp::Pow),
            Tok::Ident { quoted: false, .. } => {
                if self.at_kw("OR") {
                    op(BinaryOp::Or)
                } else if self.at_kw("XOR") {
                    op(BinaryOp::Xor)
                } else if self.at_kw("AND") {
                    op(BinaryOp::And)
                } else if self.at_kw("CONTAINS") {
                    op(BinaryOp::Contains)
                } else if self.at_kw("IN") {
                    op(BinaryOp::In)
                } else if self.at_kw("STARTS") && self.is_kw_at(1, "WITH") {
                    Some((Infix::Binary(BinaryOp::StartsWith), PREC_PREDICATE, 2))
                } else if self.at_kw("ENDS") && self.is_kw_at(1, "WITH") {
                    Some((Infix::Binary(BinaryOp::EndsWith), PREC_PREDICATE, 2))
                } else if self.at_kw("IS") {
                    Some((Infix::IsNull, PREC_PREDICATE, 1))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Operators binding at least as tightly as `min`, left-associative.
    fn binary(&mut self, min: u8) -> Result<Expr> {
        let base = self.depth;
        let mut left = self.prefix()?;
        // The right operand of the last comparison, for chains like `a < b < c`.
        let mut last_cmp: Option<Expr> = None;
        while let Some((op, prec, toks)) = self.infix() {
            if prec < min {
                break;
            }
            for _ in 0..toks {
                self.bump();
            }
            self.link()?;
            let op = match op {
                Infix::IsNull => {
                    let not = self.eat_kw("NOT");
                    let end = self.expect_kw("NULL")?;
                    let span = left.span.to(end);
                    left = Expr::new(ExprKind::IsNull(Box::new(left), not), span);
                    last_cmp = None;
                    continue;
                }
                Infix::Binary(op) => op,
            };
            let right = self.binary(prec + 1)?;
            if prec == PREC_COMPARISON {
                left = match last_cmp.take() {
                    // `a < b < c` is `a < b AND b < c`.
                    Some(prev) => {
                        let span = prev.span.to(right.span);
                        let cmp = Expr::new(
                            ExprKind::Binary(op, Box::new(prev), Box::new(right.clone())),
                            span,
                        );
                        let span = left.span.to(cmp.span);
                        Expr::new(
                            ExprKind::Binary(BinaryOp::And, Box::new(left), Box::new(cmp)),
                            span,
                        )
                    }
                    None => {
                        let span = left.span.to(right.span);
                        Expr::new(
                            ExprKind::Binary(op, Box::new(left), Box::new(right.clone())),
                            span,
                        )
                    }
                };
                last_cmp = Some(right);
            } else {
                let span = left.span.to(right.span);
                left = Expr::new(ExprKind::Binary(op, Box::new(left), Box::new(right)), span);
                last_cmp = None;
            }
        }
        self.depth = base;
        Ok(left)
    }

    /// `NOT`, unary `-` and `+`, then an atom with its postfix operators.
    fn prefix(&mut self) -> Result<Expr> {
        let start = self.peek().span;
        if self.at_kw("NOT") {
            self.bump();
            self.enter()?;
            let inner = self.binary(PREC_NOT)?;
            let span = start.to(inner.span);
            return Ok(Expr::new(
                ExprKind::Unary(UnaryOp::Not, Box::new(inner)),
                span,
            ));
        }
        if self.eat(&Tok::Minus) {
            // `-9223372036854775808` is i64::MIN, which only fits with the minus.
            if let Tok::Int(text) = &self.peek().tok {
                let text = format!("-{text}");
                let t = self.peek().span;
                if let Ok(n) = text.parse::<i64>() {
                    self.bump();
                    let lit = Expr::new(ExprKind::Int(n), start.to(t));
                    return self.postfix(lit);
                }
            }
            self.enter()?;
            let inner = self.prefix()?;
            let span = start.to(inner.span);
            return Ok(Expr::new(
                ExprKind::Unary(UnaryOp::Neg, Box::new(inner)),
                span,
            ));
        }
        if self.eat(&Tok::Plus) {
            self.enter()?;
            let inner = self.prefix()?;
            let span = start.to(inner.span);
            return Ok(Expr::new(
                ExprKind::Unary(UnaryOp::Plus, Box::new(inner)),
                span,
            ));
        }
        let atom = self.atom()?;
        self.postfix(atom)
    }

    fn postfix(&mut self, mut expr: Expr) -> Result<Expr> {
        loop {
            if matches!(self.peek().tok, Tok::Dot | Tok::LBracket | Tok::Colon) {
                self.link()?;
            }
            match self.peek().tok {
                Tok::Dot => {
                    self.bump();
                    let key = self.name("a property name")?;
                    let span = expr.span.to(key.span);
                    expr = Expr::new(ExprKind::Property(Box::new(expr), key.name), span);
                }
                Tok::LBracket => {
                    self.bump();
                    let from = if self.peek().tok == Tok::DotDot {
                        None
                    } else {
                        Some(Box::new(self.expr()?))
                    };
                    if self.eat(&Tok::DotDot) {
                        let to = if self.peek().tok == Tok::RBracket {
                            None
                        } else {
                            Some(Box::new(self.expr()?))
                        };
                        let end = self.expect(&Tok::RBracket, "']'")?;
                        let span = expr.span.to(end);
                        expr = Expr::new(ExprKind::Slice(Box::new(expr), from, to), span);
                    } else {
                        let end = self.expect(&Tok::RBracket, "'..' or ']'")?;
                        let index = from.expect("an index unless the slice started with '..'");
                        let span = expr.span.to(end);
                        expr = Expr::new(ExprKind::Index(Box::new(expr), index), span);
                    }
                }
                Tok::Colon if matches!(self.peek_at(1).tok, Tok::Ident { .. }) => {
                    let labels: Vec<Ident> = self.labels()?;
                    let span = expr.span.to(labels.last().expect("one label").span);
                    let names = labels.into_iter().map(|l| l.name).collect();
                    expr = Expr::new(ExprKind::HasLabels(Box::new(expr), names), span);
                }
                _ => return Ok(expr),
            }
        }
    }

    pub(super) fn atom(&mut self) -> Result<Expr> {
        let t = self.peek().clone();
        let span = t.span;
        let kind = match t.tok {
            Tok::Int(text) => {
                let n = text.parse::<i64>().map_err(|_| {
                    self.error_at(
                        span.start,
                        format!(
                            "the integer {text} is too large (the maximum is {})",
                            i64::MAX
                        ),
                    )
                })?;
                self.bump();
                ExprKind::Int(n)
            }
            Tok::Float(f) => {
                self.bump();
                ExprKind::Float(f)
            }
            Tok::Str(s) => {
                self.bump();
                ExprKind::Str(s)
            }
            Tok::Param(name) => {
                self.bump();
                ExprKind::Param(name)
            }
            Tok::LParen => {
                self.bump();
                let inner = self.expr()?;
                let end = self.expect(&Tok::RParen, "')'")?;
                return Ok(Expr::new(inner.kind, span.to(end)));
            }
            Tok::LBracket => return self.list_or_comprehension(),
            Tok::LBrace => return self.map_literal(),
            Tok::Ident { name, quoted } => {
                if !quoted {
                    if let Some(kind) = keyword_literal(&name) {
                        self.bump();
                        return Ok(Expr::new(kind, span));
                    }
                    if name.eq_ignore_ascii_case("CASE") {
                        return self.case();
                    }
                }
                if self.peek_at(1).tok == Tok::LParen {
                    return self.call();
                }
                if !quoted && is_reserved(&name) {
                    return Err(self.expected("an expression"));
                }
                self.bump();
                ExprKind::Var(name)
            }
            _ => return Err(self.expected("an expression")),
        };
        Ok(Expr::new(kind, span))
    }

    fn call(&mut self) -> Result<Expr> {
        let name = self.name("a function name")?;
        self.expect(&Tok::LParen, "'('")?;
        if name.name.eq_ignore_ascii_case("count") && self.peek().tok == Tok::Star {
            self.bump();
            let end = self.expect(&Tok::RParen, "')'")?;
            return Ok(Expr::new(ExprKind::CountStar, name.span.to(end)));
        }
        let distinct = self.eat_kw("DISTINCT");
        let mut args = Vec::new();
        if self.peek().tok != Tok::RParen {
            args = self.comma_list(Parser::expr)?;
        }
        let end = self.expect(&Tok::RParen, "',' or ')'")?;
        Ok(Expr::new(
            ExprKind::Call {
                name: name.name,
                distinct,
                args,
            },
            name.span.to(end),
        ))
    }

    fn case(&mut self) -> Result<Expr> {
        let start = self.bump().span;
        let operand = if self.at_kw("WHEN") {
            None
        } else {
            Some(Box::new(self.expr()?))
        };
        let mut whens = Vec::new();
        while self.eat_kw("WHEN") {
            let cond = self.expr()?;
            self.expect_kw("THEN")?;
            whens.push((cond, self.expr()?));
        }
        if whens.is_empty() {
            return Err(self.expected("WHEN"));
        }
        let otherwise = if self.eat_kw("ELSE") {
            Some(Box::new(self.expr()?))
        } else {
            None
        };
        let end = self.expect_kw("END")?;
        Ok(Expr::new(
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            },
            start.to(end),
        ))
    }

    fn list_or_comprehension(&mut self) -> Result<Expr> {
        let start = self.bump().span;
        if self.at_variable() && self.is_kw_at(1, "IN") {
            let var = self.variable()?;
            self.bump();
            let list = Box::new(self.expr()?);
            let predicate = if self.eat_kw("WHERE") {
                Some(Box::new(self.expr()?))
            } else {
                None
            };
            let map = if self.eat(&Tok::Pipe) {
                Some(Box::new(self.expr()?))
            } else {
                None
            };
            let end = self.expect(&Tok::RBracket, "']'")?;
            return Ok(Expr::new(
                ExprKind::ListComprehension {
                    var,
                    list,
                    predicate,
                    map,
                },
                start.to(end),
            ));
        }
        let mut items = Vec::new();
        if self.peek().tok != Tok::RBracket {
            items = self.comma_list(Parser::expr)?;
        }
        let end = self.expect(&Tok::RBracket, "',' or ']'")?;
        Ok(Expr::new(ExprKind::List(items), start.to(end)))
    }

    pub(super) fn map_literal(&mut self) -> Result<Expr> {
        let start = self.expect(&Tok::LBrace, "'{'")?;
        let mut entries: Vec<(String, Expr)> = Vec::new();
        if self.peek().tok != Tok::RBrace {
            entries = self.comma_list(|p| {
                let key = match &p.peek().tok {
                    Tok::Ident { name, .. } | Tok::Str(name) => name.clone(),
                    _ => return Err(p.expected("a property name")),
                };
                p.bump();
                p.expect(&Tok::Colon, "':'")?;
                Ok((key, p.expr()?))
            })?;
        }
        let end = self.expect(&Tok::RBrace, "',' or '}'")?;
        Ok(Expr::new(ExprKind::Map(entries), start.to(end)))
    }
}

fn keyword_literal(word: &str) -> Option<ExprKind> {
    if word.eq_ignore_ascii_case("null") {
        Some(ExprKind::Null)
    } else if word.eq_ignore_ascii_case("true") {
        Some(ExprKind::Bool(true))
    } else if word.eq_ignore_ascii_case("false") {
        Some(ExprKind::Bool(false))
    } else {
        None
    }
}
