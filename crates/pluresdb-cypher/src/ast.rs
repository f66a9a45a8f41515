//! The syntax tree [`parse`](crate::parse) produces. Every expression and name keeps its byte
//! span in the query text so later errors can point at it.

/// A byte range `start..end` of the query text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A name (variable, label, relationship type, property key) and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The name, without backquotes.
    pub name: String,
    /// Where it is.
    pub span: Span,
}

/// A whole statement: one or more single queries joined by `UNION` / `UNION ALL`.
#[derive(Clone, Debug)]
pub struct Statement {
    /// The single queries.
    pub parts: Vec<SingleQuery>,
    /// For each `UNION` between parts: true for `UNION ALL`.
    pub union_all: Vec<bool>,
}

/// A sequence of clauses.
#[derive(Clone, Debug)]
pub struct SingleQuery {
    /// The clauses in order.
    pub clauses: Vec<Clause>,
}

/// One clause.
#[derive(Clone, Debug)]
pub enum Clause {
    /// `[OPTIONAL] MATCH patterns [WHERE expr]`.
    Match(Match),
    /// `UNWIND expr AS name`.
    Unwind {
        /// The list.
        expr: Expr,
        /// The variable each element is bound to.
        alias: Ident,
    },
    /// `WITH ...`.
    With(Projection),
    /// `RETURN ...`.
    Return(Projection),
    /// `CREATE patterns`.
    Create {
        /// The patterns to create.
        patterns: Vec<PathPattern>,
        /// The clause keyword's span.
        span: Span,
    },
    /// `MERGE pattern [ON CREATE SET ...] [ON MATCH SET ...]`.
    Merge(Merge),
    /// `SET items`.
    Set(Vec<SetItem>),
    /// `REMOVE items`.
    Remove(Vec<RemoveItem>),
    /// `[DETACH] DELETE exprs`.
    Delete {
        /// `DETACH DELETE`.
        detach: bool,
        /// What to delete.
        exprs: Vec<Expr>,
    },
}

/// `[OPTIONAL] MATCH`.
#[derive(Clone, Debug)]
pub struct Match {
    /// `OPTIONAL MATCH`.
    pub optional: bool,
    /// The comma-separated patterns.
    pub patterns: Vec<PathPattern>,
    /// The `WHERE` predicate.
    pub where_: Option<Expr>,
}

/// `MERGE`.
#[derive(Clone, Debug)]
pub struct Merge {
    /// The pattern to match or create.
    pub pattern: PathPattern,
    /// `ON CREATE SET` items.
    pub on_create: Vec<SetItem>,
    /// `ON MATCH SET` items.
    pub on_match: Vec<SetItem>,
}

/// A path pattern `[p =] (a)-[r]->(b)...`.
#[derive(Clone, Debug)]
pub struct PathPattern {
    /// The path variable.
    pub var: Option<Ident>,
    /// The first node.
    pub start: NodePattern,
    /// Each relationship with the node after it.
    pub steps: Vec<(RelPattern, NodePattern)>,
    /// The whole pattern.
    pub span: Span,
}

/// `(var:Label {props})`.
#[derive(Clone, Debug)]
pub struct NodePattern {
    /// The variable.
    pub var: Option<Ident>,
    /// The labels (PluresDB nodes have at most one: their type).
    pub labels: Vec<Ident>,
    /// A map literal or parameter of property values.
    pub props: Option<Expr>,
    /// The whole node pattern.
    pub span: Span,
}

/// Which way a relationship pattern points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelDirection {
    /// `-->`: from the left node to the right one.
    Right,
    /// `<--`: from the right node to the left one.
    Left,
    /// `--`: either way.
    Both,
}

/// `-[var:TYPE|OTHER *min..max {props}]->`.
#[derive(Clone, Debug)]
pub struct RelPattern {
    /// The variable.
    pub var: Option<Ident>,
    /// Allowed relationship types (empty = any).
    pub types: Vec<Ident>,
    /// Direction.
    pub direction: RelDirection,
    /// For a variable-length relationship, the hop range.
    pub length: Option<LengthRange>,
    /// A map literal or parameter of property values.
    pub props: Option<Expr>,
    /// The whole relationship pattern.
    pub span: Span,
}

/// The hop range of a variable-length relationship: `*` is `{None, None}`, `*2` is
/// `{Some(2), Some(2)}`, `*..3` is `{None, Some(3)}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthRange {
    /// Minimum hops (default 1).
    pub min: Option<u64>,
    /// Maximum hops (default: the executor's `max_depth`).
    pub max: Option<u64>,
}

/// The body of `WITH` and `RETURN`.
#[derive(Clone, Debug)]
pub struct Projection {
    /// `DISTINCT`.
    pub distinct: bool,
    /// `*` (all variables in scope), possibly followed by more items.
    pub star: bool,
    /// The items.
    pub items: Vec<ProjectionItem>,
    /// `ORDER BY` keys.
    pub order: Vec<SortItem>,
    /// `SKIP` expression.
    pub skip: Option<Expr>,
    /// `LIMIT` expression.
    pub limit: Option<Expr>,
    /// `WHERE` (only for `WITH`).
    pub where_: Option<Expr>,
    /// The keyword's span.
    pub span: Span,
}

/// `expr [AS alias]`.
#[derive(Clone, Debug)]
pub struct ProjectionItem {
    /// The expression.
    pub expr: Expr,
    /// The alias.
    pub alias: Option<Ident>,
    /// The expression's source text (the column name when there is no alias).
    pub text: String,
}

/// `expr [ASC|DESC]`.
#[derive(Clone, Debug)]
pub struct SortItem {
    /// The key.
    pub expr: Expr,
    /// `DESC`.
    pub descending: bool,
}

/// One `SET` item.
#[derive(Clone, Debug)]
pub enum SetItem {
    /// `target.key = value`.
    Property {
        /// The node or relationship.
        target: Expr,
        /// The property key.
        key: Ident,
        /// The new value (null removes the property).
        value: Expr,
    },
    /// `var = map` (replaces all properties).
    Replace {
        /// The node or relationship variable.
        var: Ident,
        /// The new properties.
        value: Expr,
    },
    /// `var += map` (merges properties).
    Merge {
        /// The node or relationship variable.
        var: Ident,
        /// Properties to add or change (null values remove).
        value: Expr,
    },
    /// `var:Label`.
    Label {
        /// The node variable.
        var: Ident,
        /// The label (the node's type).
        labels: Vec<Ident>,
    },
}

/// One `REMOVE` item.
#[derive(Clone, Debug)]
pub enum RemoveItem {
    /// `target.key`.
    Property {
        /// The node or relationship.
        target: Expr,
        /// The property key.
        key: Ident,
    },
    /// `var:Label`.
    Label {
        /// The node variable.
        var: Ident,
        /// The labels.
        labels: Vec<Ident>,
    },
}

/// An expression with its span. Equality ignores spans (used to match `ORDER BY` keys with
/// projected expressions).
#[derive(Clone, Debug)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Expr) -> bool {
        self.kind == other.kind
    }
}

impl Expr {
    /// A new expression.
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        Expr { kind, span }
    }
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// `NOT`.
    Not,
    /// `-`.
    Neg,
    /// `+`.
    Plus,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `OR`.
    Or,
    /// `XOR`.
    Xor,
    /// `AND`.
    And,
    /// `=`.
    Eq,
    /// `<>`.
    Ne,
    /// `<`.
    Lt,
    /// `>`.
    Gt,
    /// `<=`.
    Le,
    /// `>=`.
    Ge,
    /// `=~` (not supported; rejected when compiled).
    RegexMatch,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Mod,
    /// `^`.
    Pow,
    /// `STARTS WITH`.
    StartsWith,
    /// `ENDS WITH`.
    EndsWith,
    /// `CONTAINS`.
    Contains,
    /// `IN`.
    In,
}

/// What an expression is.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A string literal.
    Str(String),
    /// `$name`.
    Param(String),
    /// A variable.
    Var(String),
    /// `[a, b]`.
    List(Vec<Expr>),
    /// `{k: v}`.
    Map(Vec<(String, Expr)>),
    /// `expr.key`.
    Property(Box<Expr>, String),
    /// `expr[index]`.
    Index(Box<Expr>, Box<Expr>),
    /// `expr[from..to]`.
    Slice(Box<Expr>, Option<Box<Expr>>, Option<Box<Expr>>),
    /// `expr:Label` (a label test).
    HasLabels(Box<Expr>, Vec<String>),
    /// A unary operator.
    Unary(UnaryOp, Box<Expr>),
    /// A binary operator.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `expr IS NULL` (false) / `expr IS NOT NULL` (true).
    IsNull(Box<Expr>, bool),
    /// `name([DISTINCT] args)`.
    Call {
        /// The function name as written.
        name: String,
        /// `DISTINCT` (aggregates).
        distinct: bool,
        /// Arguments.
        args: Vec<Expr>,
    },
    /// `count(*)`.
    CountStar,
    /// `CASE [operand] WHEN .. THEN .. [ELSE ..] END`.
    Case {
        /// The simple form's operand.
        operand: Option<Box<Expr>>,
        /// `WHEN` / `THEN` pairs.
        whens: Vec<(Expr, Expr)>,
        /// `ELSE`.
        otherwise: Option<Box<Expr>>,
    },
    /// `[var IN list WHERE pred | map]`.
    ListComprehension {
        /// The element variable.
        var: Ident,
        /// The list.
        list: Box<Expr>,
        /// The filter.
        predicate: Option<Box<Expr>>,
        /// The mapping.
        map: Option<Box<Expr>>,
    },
}
