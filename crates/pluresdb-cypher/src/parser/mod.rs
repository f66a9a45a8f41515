//! A recursive-descent parser from tokens to [`ast::Statement`](crate::ast::Statement):
//! clauses and patterns here, expressions in `expr`. Errors say what was expected and what
//! was found, with the position.

mod expr;

use crate::ast::*;
use crate::error::{CypherError, ErrorKind, Result};
use crate::lexer::{Tok, Token, tokenize};

/// Words that cannot be used as bare variable names in expressions.
const RESERVED: &[&str] = &[
    "MATCH",
    "OPTIONAL",
    "WHERE",
    "RETURN",
    "WITH",
    "CREATE",
    "MERGE",
    "DELETE",
    "DETACH",
    "SET",
    "REMOVE",
    "ORDER",
    "BY",
    "SKIP",
    "LIMIT",
    "UNWIND",
    "UNION",
    "AND",
    "OR",
    "XOR",
    "NOT",
    "IN",
    "IS",
    "AS",
    "DISTINCT",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "ON",
    "STARTS",
    "ENDS",
    "CONTAINS",
    "ASC",
    "DESC",
    "ASCENDING",
    "DESCENDING",
    "NULL",
    "TRUE",
    "FALSE",
];

/// The most clauses in one query (each `UNION` part counts alone). Running a query recurses
/// once per clause (on the heap once the stack runs low, see `crate::stack`), so this bounds
/// the memory a query's text can make it use.
const MAX_CLAUSES: usize = 10_000;

/// The most node and relationship patterns one `MATCH`, `OPTIONAL MATCH` or `MERGE` clause
/// may match: planning the order to match a clause's patterns in takes time that grows faster
/// than their number (1,000 take seconds in a debug build).
const MAX_MATCHED: usize = 1_000;

const CLAUSES: &str = "a clause (MATCH, OPTIONAL MATCH, UNWIND, WITH, RETURN, CREATE, MERGE, SET, \
                       REMOVE, DELETE)";

/// Clauses of Neo4j's Cypher that are not supported, with what to write instead.
const UNSUPPORTED_CLAUSES: [(&str, &str); 3] = [
    (
        "FOREACH",
        "FOREACH is not supported; UNWIND the list and follow it with the update clauses, as \
         in WITH collect(n) AS ns UNWIND ns AS x SET x.k = 1",
    ),
    (
        "LOAD",
        "LOAD CSV is not supported; read the file in your program and pass its rows as a \
         parameter: UNWIND $rows AS row CREATE (n:Label {id: row.id, name: row.name})",
    ),
    (
        "CALL",
        "CALL (procedures and subqueries) is not supported; write the query with MATCH, WITH \
         and UNWIND",
    ),
];

/// Parses a whole statement.
pub(crate) fn parse_statement(src: &str) -> Result<Statement> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
        links: 0,
        matched: 0,
    };
    let mut parts = vec![p.single_query()?];
    let mut union_all = Vec::new();
    while p.eat_kw("UNION") {
        union_all.push(p.eat_kw("ALL"));
        parts.push(p.single_query()?);
    }
    p.eat(&Tok::Semicolon);
    if p.peek().tok != Tok::Eof {
        return Err(p.expected(CLAUSES));
    }
    Ok(Statement { parts, union_all })
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    /// How deeply the expression being parsed nests (bounded so that deep input cannot
    /// overflow the stack here or when the tree is compiled and evaluated).
    depth: usize,
    /// Operators and property lookups chained in the current top-level expression (each
    /// adds a level to the tree, though not to the parser's recursion).
    links: usize,
    /// Node and relationship patterns to match so far in this clause.
    matched: usize,
}

impl Parser<'_> {
    // ---- token helpers ----

    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, ahead: usize) -> &Token {
        &self.toks[(self.pos + ahead).min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.toks[self.pos - 1].span.end
        }
    }

    fn is_kw_at(&self, ahead: usize, kw: &str) -> bool {
        matches!(&self.peek_at(ahead).tok, Tok::Ident { name, quoted: false } if name.eq_ignore_ascii_case(kw))
    }

    fn at_kw(&self, kw: &str) -> bool {
        self.is_kw_at(0, kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.at_kw(kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<Span> {
        if self.at_kw(kw) {
            Ok(self.bump().span)
        } else {
            Err(self.expected(&format!("'{kw}'")))
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if &self.peek().tok == tok {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<Span> {
        if &self.peek().tok == tok {
            Ok(self.bump().span)
        } else {
            Err(self.expected(what))
        }
    }

    fn expected(&self, what: &str) -> CypherError {
        let t = self.peek();
        CypherError::at(
            ErrorKind::Syntax,
            format!("expected {what} but found {}", t.describe(self.src)),
            self.src,
            t.span.start,
        )
    }

    fn error_at(&self, offset: usize, message: impl std::fmt::Display) -> CypherError {
        CypherError::at(ErrorKind::Syntax, message, self.src, offset)
    }

    /// Any name (keywords allowed): labels, types, keys, aliases.
    fn name(&mut self, what: &str) -> Result<Ident> {
        match &self.peek().tok {
            Tok::Ident { name, .. } => {
                let name = name.clone();
                let span = self.bump().span;
                Ok(Ident { name, span })
            }
            _ => Err(self.expected(what)),
        }
    }

    /// A variable name: backquoted, or a word that is not reserved.
    fn variable(&mut self) -> Result<Ident> {
        if self.at_variable() {
            self.name("a variable")
        } else {
            Err(self.expected("a variable name"))
        }
    }

    fn at_variable(&self) -> bool {
        match &self.peek().tok {
            Tok::Ident { quoted: true, .. } => true,
            Tok::Ident { name, .. } => !is_reserved(name),
            _ => false,
        }
    }

    // ---- clauses ----

    fn single_query(&mut self) -> Result<SingleQuery> {
        let mut clauses = Vec::new();
        let mut start = self.peek().span.start;
        while let Some(clause) = self.clause()? {
            if clauses.len() == MAX_CLAUSES {
                return Err(self.error_at(
                    start,
                    format!(
                        "the query has more than {MAX_CLAUSES} clauses; split it into several \
                         queries"
                    ),
                ));
            }
            clauses.push(clause);
            start = self.peek().span.start;
        }
        if clauses.is_empty() {
            return Err(self.expected(CLAUSES));
        }
        Ok(SingleQuery { clauses })
    }

    fn clause(&mut self) -> Result<Option<Clause>> {
        let start = self.peek().span;
        let clause = if self.eat_kw("MATCH") {
            Clause::Match(self.match_body(false)?)
        } else if self.at_kw("OPTIONAL") {
            self.bump();
            self.expect_kw("MATCH")?;
            Clause::Match(self.match_body(true)?)
        } else if self.eat_kw("UNWIND") {
            let expr = self.expr()?;
            self.expect_kw("AS")?;
            let alias = self.variable()?;
            Clause::Unwind { expr, alias }
        } else if self.eat_kw("WITH") {
            Clause::With(self.projection(start, true)?)
        } else if self.eat_kw("RETURN") {
            Clause::Return(self.projection(start, false)?)
        } else if self.eat_kw("CREATE") {
            Clause::Create {
                patterns: self.patterns()?,
                span: start,
            }
        } else if self.eat_kw("MERGE") {
            self.merge()?
        } else if self.eat_kw("SET") {
            Clause::Set(self.set_items()?)
        } else if self.eat_kw("REMOVE") {
            Clause::Remove(self.comma_list(Parser::remove_item)?)
        } else if self.eat_kw("DELETE") {
            Clause::Delete {
                detach: false,
                exprs: self.comma_list(Parser::expr)?,
            }
        } else if self.at_kw("DETACH") {
            self.bump();
            self.expect_kw("DELETE")?;
            Clause::Delete {
                detach: true,
                exprs: self.comma_list(Parser::expr)?,
            }
        } else if self.at_kw("WHERE") {
            return Err(self.error_at(
                start.start,
                "WHERE must follow MATCH, OPTIONAL MATCH or WITH",
            ));
        } else if let Some(instead) = UNSUPPORTED_CLAUSES
            .iter()
            .find(|(kw, _)| self.at_kw(kw))
            .map(|(_, instead)| instead)
        {
            return Err(CypherError::at(
                ErrorKind::Semantic,
                instead,
                self.src,
                start.start,
            ));
        } else {
            return Ok(None);
        };
        Ok(Some(clause))
    }

    fn comma_list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut out = vec![item(self)?];
        while self.eat(&Tok::Comma) {
            out.push(item(self)?);
        }
        Ok(out)
    }

    fn match_body(&mut self, optional: bool) -> Result<Match> {
        self.matched = 0;
        let patterns = self.comma_list(Parser::matched_pattern)?;
        let where_ = if self.eat_kw("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        Ok(Match {
            optional,
            patterns,
            where_,
        })
    }

    fn merge(&mut self) -> Result<Clause> {
        self.matched = 0;
        let pattern = self.matched_pattern()?;
        let (mut on_create, mut on_match) = (Vec::new(), Vec::new());
        while self.at_kw("ON") {
            self.bump();
            let create = if self.eat_kw("CREATE") {
                true
            } else if self.eat_kw("MATCH") {
                false
            } else {
                return Err(self.expected("CREATE or MATCH after ON"));
            };
            self.expect_kw("SET")?;
            let items = self.set_items()?;
            if create {
                on_create.extend(items);
            } else {
                on_match.extend(items);
            }
        }
        Ok(Clause::Merge(Merge {
            pattern,
            on_create,
            on_match,
        }))
    }

    fn projection(&mut self, span: Span, with: bool) -> Result<Projection> {
        let distinct = self.eat_kw("DISTINCT");
        let mut star = false;
        let mut items = Vec::new();
        if self.eat(&Tok::Star) {
            star = true;
            while self.eat(&Tok::Comma) {
                items.push(self.projection_item()?);
            }
        } else {
            items = self.comma_list(Parser::projection_item)?;
        }
        let mut order = Vec::new();
        if self.at_kw("ORDER") {
            self.bump();
            self.expect_kw("BY")?;
            order = self.comma_list(|p| {
                let expr = p.expr()?;
                let descending = if p.eat_kw("DESC") || p.eat_kw("DESCENDING") {
                    true
                } else {
                    let _ = p.eat_kw("ASC") || p.eat_kw("ASCENDING");
                    false
                };
                Ok(SortItem { expr, descending })
            })?;
        }
        let skip = if self.eat_kw("SKIP") {
            Some(self.expr()?)
        } else {
            None
        };
        let limit = if self.eat_kw("LIMIT") {
            Some(self.expr()?)
        } else {
            None
        };
        let where_ = if with && self.eat_kw("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        Ok(Projection {
            distinct,
            star,
            items,
            order,
            skip,
            limit,
            where_,
            span,
        })
    }

    fn projection_item(&mut self) -> Result<ProjectionItem> {
        let expr = self.expr()?;
        let text = self.src[expr.span.start..expr.span.end].trim().to_owned();
        let alias = if self.eat_kw("AS") {
            Some(self.name("an alias name")?)
        } else {
            None
        };
        Ok(ProjectionItem { expr, alias, text })
    }

    fn set_items(&mut self) -> Result<Vec<SetItem>> {
        self.comma_list(|p| {
            let var = p.variable()?;
            if p.peek().tok == Tok::Colon {
                return Ok(SetItem::Label {
                    var,
                    labels: p.labels()?,
                });
            }
            let mut target = Expr::new(ExprKind::Var(var.name.clone()), var.span);
            let mut key = None;
            p.links = 0;
            while p.eat(&Tok::Dot) {
                p.link()?;
                let k = p.name("a property name")?;
                if let Some(prev) = key.replace(k.clone()) {
                    let prev: Ident = prev;
                    let span = target.span.to(prev.span);
                    target = Expr::new(ExprKind::Property(Box::new(target), prev.name), span);
                }
            }
            match key {
                Some(key) => {
                    p.expect(&Tok::Eq, "'='")?;
                    Ok(SetItem::Property {
                        target,
                        key,
                        value: p.expr()?,
                    })
                }
                None if p.eat(&Tok::Eq) => Ok(SetItem::Replace {
                    var,
                    value: p.expr()?,
                }),
                None if p.eat(&Tok::PlusEq) => Ok(SetItem::Merge {
                    var,
                    value: p.expr()?,
                }),
                None => Err(p.expected("'.', '=', '+=' or ':'")),
            }
        })
    }

    fn remove_item(&mut self) -> Result<RemoveItem> {
        let var = self.variable()?;
        if self.peek().tok == Tok::Colon {
            return Ok(RemoveItem::Label {
                var,
                labels: self.labels()?,
            });
        }
        let mut target = Expr::new(ExprKind::Var(var.name.clone()), var.span);
        self.expect(&Tok::Dot, "'.' or ':'")?;
        let mut key = self.name("a property name")?;
        self.links = 0;
        while self.eat(&Tok::Dot) {
            self.link()?;
            let next = self.name("a property name")?;
            let span = target.span.to(key.span);
            target = Expr::new(ExprKind::Property(Box::new(target), key.name), span);
            key = next;
        }
        Ok(RemoveItem::Property { target, key })
    }

    fn labels(&mut self) -> Result<Vec<Ident>> {
        let mut labels = Vec::new();
        while self.eat(&Tok::Colon) {
            labels.push(self.name("a label name")?);
        }
        Ok(labels)
    }

    // ---- patterns ----

    fn patterns(&mut self) -> Result<Vec<PathPattern>> {
        self.comma_list(Parser::pattern)
    }

    /// A pattern to match, counted against [`MAX_MATCHED`].
    fn matched_pattern(&mut self) -> Result<PathPattern> {
        let pattern = self.pattern()?;
        self.matched += 1 + 2 * pattern.steps.len();
        if self.matched > MAX_MATCHED {
            return Err(self.error_at(
                pattern.span.start,
                format!(
                    "the clause matches more than {MAX_MATCHED} node and relationship patterns; \
                     split it into several clauses or queries, or use a variable-length relationship such \
                     as -[*5]-> for a long chain"
                ),
            ));
        }
        Ok(pattern)
    }

    fn pattern(&mut self) -> Result<PathPattern> {
        let start_offset = self.peek().span.start;
        let mut var = None;
        if matches!(self.peek().tok, Tok::Ident { .. }) && self.peek_at(1).tok == Tok::Eq {
            var = Some(self.variable()?);
            self.bump();
        }
        if let Tok::Ident { name, .. } = &self.peek().tok
            && (name.eq_ignore_ascii_case("shortestPath")
                || name.eq_ignore_ascii_case("allShortestPaths"))
            && self.peek_at(1).tok == Tok::LParen
        {
            let name = name.clone();
            return Err(CypherError::at(
                ErrorKind::Semantic,
                format!(
                    "{name}() is not supported; use a variable-length pattern with ORDER BY \
                     length(p) LIMIT 1"
                ),
                self.src,
                self.peek().span.start,
            ));
        }
        let start = self.node_pattern()?;
        let mut steps = Vec::new();
        while matches!(self.peek().tok, Tok::Minus | Tok::Lt) {
            let rel = self.rel_pattern()?;
            let node = self.node_pattern()?;
            steps.push((rel, node));
        }
        Ok(PathPattern {
            var,
            start,
            steps,
            span: Span::new(start_offset, self.prev_end()),
        })
    }

    fn node_pattern(&mut self) -> Result<NodePattern> {
        let open = self.expect(&Tok::LParen, "'(' to start a node pattern")?;
        let var = match &self.peek().tok {
            Tok::Ident { .. } => Some(self.name("a variable")?),
            _ => None,
        };
        let labels = self.labels()?;
        let props = self.pattern_props()?;
        let close = self.expect(&Tok::RParen, "')'")?;
        Ok(NodePattern {
            var,
            labels,
            props,
            span: open.to(close),
        })
    }

    fn pattern_props(&mut self) -> Result<Option<Expr>> {
        match self.peek().tok {
            Tok::LBrace => Ok(Some(self.map_literal()?)),
            Tok::Param(_) => Ok(Some(self.atom()?)),
            _ => Ok(None),
        }
    }

    fn rel_pattern(&mut self) -> Result<RelPattern> {
        let start = self.peek().span;
        let left = self.eat(&Tok::Lt);
        self.expect(&Tok::Minus, "'-'")?;
        let (mut var, mut types, mut length, mut props) = (None, Vec::new(), None, None);
        if self.eat(&Tok::LBracket) {
            if matches!(self.peek().tok, Tok::Ident { .. }) {
                var = Some(self.name("a variable")?);
            }
            if self.eat(&Tok::Colon) {
                types.push(self.name("a relationship type")?);
                while self.eat(&Tok::Pipe) {
                    self.eat(&Tok::Colon);
                    types.push(self.name("a relationship type")?);
                }
            }
            if self.eat(&Tok::Star) {
                length = Some(self.length_range()?);
            }
            props = self.pattern_props()?;
            self.expect(&Tok::RBracket, "']'")?;
        }
        self.expect(&Tok::Minus, "'-'")?;
        let right = self.eat(&Tok::Gt);
        let direction = match (left, right) {
            (false, true) => RelDirection::Right,
            (true, false) => RelDirection::Left,
            _ => RelDirection::Both,
        };
        Ok(RelPattern {
            var,
            types,
            direction,
            length,
            props,
            span: start.to(Span::new(self.prev_end(), self.prev_end())),
        })
    }

    fn length_range(&mut self) -> Result<LengthRange> {
        let min = self.opt_hops()?;
        if self.eat(&Tok::DotDot) {
            let max = self.opt_hops()?;
            if let (Some(lo), Some(hi)) = (min, max)
                && lo > hi
            {
                return Err(self.error_at(
                    self.prev_end(),
                    format!("the minimum length {lo} is greater than the maximum {hi}"),
                ));
            }
            Ok(LengthRange { min, max })
        } else {
            Ok(LengthRange { min, max: min })
        }
    }

    fn opt_hops(&mut self) -> Result<Option<u64>> {
        if let Tok::Int(text) = &self.peek().tok {
            let span = self.peek().span;
            let n = text
                .parse::<u64>()
                .map_err(|_| self.error_at(span.start, "the hop count is too large"))?;
            self.bump();
            Ok(Some(n))
        } else {
            Ok(None)
        }
    }
}

fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_clause(src: &str) -> Clause {
        let mut st = parse_statement(src).unwrap();
        st.parts.remove(0).clauses.remove(0)
    }

    #[test]
    fn precedence() {
        let Clause::Return(p) = one_clause("RETURN 1 + 2 * 3 = 7 AND NOT false OR x") else {
            panic!()
        };
        let ExprKind::Binary(BinaryOp::Or, left, _) = &p.items[0].expr.kind else {
            panic!("{:?}", p.items[0].expr)
        };
        assert!(matches!(left.kind, ExprKind::Binary(BinaryOp::And, _, _)));
        assert_eq!(p.items[0].text, "1 + 2 * 3 = 7 AND NOT false OR x");
    }

    #[test]
    fn patterns() {
        let Clause::Match(m) =
            one_clause("MATCH p = (a:Person {name: 'Ada'})-[:KNOWS*1..3]->(b)<-[r:A|:B]-()")
        else {
            panic!()
        };
        let pat = &m.patterns[0];
        assert_eq!(pat.var.as_ref().unwrap().name, "p");
        assert_eq!(pat.steps.len(), 2);
        assert_eq!(
            pat.steps[0].0.length,
            Some(LengthRange {
                min: Some(1),
                max: Some(3)
            })
        );
        assert_eq!(pat.steps[1].0.direction, RelDirection::Left);
        assert_eq!(pat.steps[1].0.types.len(), 2);
    }

    #[test]
    fn min_i64() {
        let Clause::Return(p) = one_clause("RETURN -9223372036854775808") else {
            panic!()
        };
        assert_eq!(p.items[0].expr.kind, ExprKind::Int(i64::MIN));
    }
}
