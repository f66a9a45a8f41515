//! The plan a query compiles to: a pipeline of operators per single query, with variables
//! resolved to row slots, parameters inlined and each `MATCH` turned into an ordered list of
//! steps (start at the most selective node, expand along relationships, filter as early as
//! the variables a predicate needs are bound).

use crate::aggregate::AggSpec;
use crate::expr::CExpr;
use crate::store::Dir;

/// A compiled statement.
#[derive(Debug)]
pub(crate) struct Plan {
    pub parts: Vec<PartPlan>,
    pub union_all: Vec<bool>,
}

/// A compiled single query.
#[derive(Debug)]
pub(crate) struct PartPlan {
    /// Row width (number of slots).
    pub width: usize,
    pub ops: Vec<OpPlan>,
    pub columns: Vec<String>,
}

/// One operator of the pipeline.
#[derive(Debug)]
pub(crate) enum OpPlan {
    Match(MatchPlan),
    Unwind {
        expr: CExpr,
        slot: usize,
    },
    Filter(CExpr),
    Project(ProjectPlan),
    Create(Vec<CreatePattern>),
    Merge(MergePlan),
    Set(Vec<SetOp>),
    Delete {
        exprs: Vec<CExpr>,
        detach: bool,
    },
    /// The final `RETURN`: collects these slots as result rows.
    Return {
        slots: Vec<usize>,
    },
}

impl OpPlan {
    pub fn writes(&self) -> bool {
        matches!(
            self,
            OpPlan::Create(_) | OpPlan::Merge(_) | OpPlan::Set(_) | OpPlan::Delete { .. }
        )
    }
}

/// A `MATCH` (or the match half of a `MERGE`).
#[derive(Debug)]
pub(crate) struct MatchPlan {
    pub optional: bool,
    pub steps: Vec<Step>,
    /// Slots the clause binds (set to null when an `OPTIONAL MATCH` finds nothing).
    pub new_slots: Vec<usize>,
}

/// One step of matching a pattern.
#[derive(Debug)]
pub(crate) enum Step {
    /// Keep the row only when the predicate is true.
    Filter(CExpr),
    /// Bind `slot` to each node from a lookup by id or a label/property scan.
    Scan {
        slot: usize,
        ids: Option<IdLookup>,
        label: Option<String>,
        props: Vec<(String, CExpr)>,
    },
    /// Follow relationships from the node in `from`.
    Expand(Expand),
    /// Bind a path variable from the pattern's slots.
    Path { slot: usize, elems: Vec<PathElem> },
}

/// Node ids to look up instead of scanning.
#[derive(Debug)]
pub(crate) enum IdLookup {
    /// One id (a string; anything else matches nothing).
    One(CExpr),
    /// A list of ids.
    Many(CExpr),
}

/// A relationship expansion.
#[derive(Debug)]
pub(crate) struct Expand {
    pub from: usize,
    pub rel: usize,
    pub to: usize,
    /// Direction relative to walking from `from`.
    pub dir: Dir,
    pub types: Vec<String>,
    /// Property equalities every edge must satisfy (constant for the clause).
    pub props: Vec<(String, CExpr)>,
    /// `Some((min, max))` for a variable-length relationship.
    pub range: Option<(u64, u64)>,
    /// `to` is bound already (expand into a known node).
    pub to_bound: bool,
    /// The relationship variable was bound by an earlier clause.
    pub rel_bound: bool,
    /// Relationship slots of this clause bound before this step (relationship isomorphism).
    pub unique_against: Vec<usize>,
    /// The walk goes right-to-left in the pattern: reverse a var-length list to pattern order.
    pub reversed: bool,
    /// Something reads the var-length relationship list (a variable, a path, another
    /// relationship of the clause); otherwise the slot is left null.
    pub keep_list: bool,
}

/// A piece of a path variable.
#[derive(Clone, Debug)]
pub(crate) enum PathElem {
    Node(usize),
    Rel(usize),
    /// A variable-length relationship list (in pattern order).
    Rels(usize),
}

/// `WITH` / `RETURN`.
#[derive(Debug)]
pub(crate) struct ProjectPlan {
    /// `(slot, expression, contains an aggregate)`.
    pub items: Vec<(usize, CExpr, bool)>,
    pub aggs: Vec<AggSpec>,
    pub aggregating: bool,
    pub distinct: bool,
    /// `(key, descending)`.
    pub order: Vec<(CExpr, bool)>,
    pub skip: usize,
    pub limit: Option<usize>,
}

/// One pattern of a `CREATE` (or the create half of a `MERGE`).
#[derive(Debug)]
pub(crate) struct CreatePattern {
    pub elems: Vec<CreateElem>,
    pub path: Option<(usize, Vec<PathElem>)>,
}

/// What to create.
#[derive(Debug)]
pub(crate) enum CreateElem {
    /// A node: created unless `spec` is `None` (then the slot holds a bound node).
    Node { slot: usize, spec: Option<NodeSpec> },
    Rel {
        slot: usize,
        from: usize,
        to: usize,
        rel: String,
        props: Option<CExpr>,
    },
}

/// A node to create.
#[derive(Debug)]
pub(crate) struct NodeSpec {
    pub label: Option<String>,
    pub props: Option<CExpr>,
}

/// `MERGE`.
#[derive(Debug)]
pub(crate) struct MergePlan {
    pub matcher: MatchPlan,
    pub create: CreatePattern,
    pub on_create: Vec<SetOp>,
    pub on_match: Vec<SetOp>,
}

/// One `SET` or `REMOVE` item.
#[derive(Debug)]
pub(crate) enum SetOp {
    Prop {
        target: CExpr,
        key: String,
        value: CExpr,
    },
    Replace {
        target: CExpr,
        value: CExpr,
    },
    Merge {
        target: CExpr,
        value: CExpr,
    },
    Label {
        target: CExpr,
        label: String,
    },
    RemoveProp {
        target: CExpr,
        key: String,
    },
    RemoveLabel {
        target: CExpr,
        label: String,
    },
}
