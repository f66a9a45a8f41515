//! Runs a plan: a push pipeline where each operator hands rows to the next. Reads stream
//! (so `LIMIT` stops a match early and aggregates do not hold their input); `ORDER BY`,
//! `DISTINCT`, aggregation and update clauses hold rows, bounded by `max_rows`. Update clauses
//! take all their input before writing, so a query never reads its own writes half way.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde_json::{Map, Value as Json};

use crate::aggregate::Acc;
use crate::backend::Backend;
use crate::error::{CypherError, Result};
use crate::expr::{Env, Resolver, eval, truthy};
use crate::matcher::run_steps;
use crate::plan::{OpPlan, PartPlan, Plan, ProjectPlan};
use crate::store::{EdgeRecord, NodeRecord};
use crate::value::{Key, NodeHandle, Value};
use crate::write::run_write;
use crate::{Counters, ExecOptions, QueryResult};

/// A row: one value per slot.
pub(crate) type Row = Vec<Value>;

/// An edge's identity.
pub(crate) type EdgeKey = (String, String, String);

pub(crate) fn edge_key(e: &EdgeRecord) -> EdgeKey {
    (e.from.clone(), e.rel.clone(), e.to.clone())
}

/// How many node records [`State::cache`] keeps.
const NODE_CACHE: usize = 16_384;

/// Whether an operator wants more rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// What a query run has changed and counted so far.
pub(crate) struct State {
    pub opts: ExecOptions,
    /// Current records of nodes this query changed or deleted (deleted: the last record).
    pub nodes: HashMap<String, Rc<NodeRecord>>,
    /// Current records of edges this query changed.
    pub edges: HashMap<EdgeKey, Rc<EdgeRecord>>,
    pub deleted_nodes: HashSet<String>,
    pub deleted_edges: HashSet<EdgeKey>,
    /// Relationships walked by variable-length patterns.
    pub expanded: Cell<u64>,
    /// Recently read node records (bounded; cleared when full). Records changed by this
    /// query live in `nodes`, which is consulted first.
    pub cache: RefCell<HashMap<String, Rc<NodeRecord>>>,
    pub counters: Counters,
}

impl State {
    pub fn new(opts: ExecOptions) -> State {
        State {
            opts,
            nodes: HashMap::new(),
            edges: HashMap::new(),
            deleted_nodes: HashSet::new(),
            deleted_edges: HashSet::new(),
            expanded: Cell::new(0),
            cache: RefCell::new(HashMap::new()),
            counters: Counters::default(),
        }
    }
}

/// Read access during a run: the store and the run's state.
pub(crate) struct Ctx<'a> {
    pub store: &'a dyn Backend,
    pub state: &'a State,
}

impl Resolver for Ctx<'_> {
    fn node(&self, node: &NodeHandle) -> Result<Option<Rc<NodeRecord>>> {
        if !self.state.nodes.is_empty()
            && let Some(rec) = self.state.nodes.get(&node.id)
        {
            return Ok(Some(rec.clone()));
        }
        if let Some(rec) = node.rec.get() {
            return Ok(Some(rec.clone()));
        }
        if let Some(rec) = self.state.cache.borrow().get(&node.id) {
            let _ = node.rec.set(rec.clone());
            return Ok(Some(rec.clone()));
        }
        match self.store.node(&node.id)? {
            Some(rec) => {
                let rec = Rc::new(rec);
                let _ = node.rec.set(rec.clone());
                let mut cache = self.state.cache.borrow_mut();
                if cache.len() >= NODE_CACHE {
                    cache.clear();
                }
                cache.insert(node.id.clone(), rec.clone());
                Ok(Some(rec))
            }
            None => Ok(None),
        }
    }

    fn edge(&self, edge: &Rc<EdgeRecord>) -> Rc<EdgeRecord> {
        if self.state.edges.is_empty() {
            return edge.clone();
        }
        self.state
            .edges
            .get(&edge_key(edge))
            .cloned()
            .unwrap_or_else(|| edge.clone())
    }

    fn max_list(&self) -> usize {
        self.state.opts.max_rows
    }
}

impl Ctx<'_> {
    pub fn env<'r>(&'r self, row: &'r [Value]) -> Env<'r> {
        Env::new(row, self)
    }

    /// A value as result JSON: nodes `{"id","type","data"}`, relationships
    /// `{"from","relation","to","data"}`, paths as `[node, rel, node, ...]`.
    pub fn output(&self, v: &Value) -> Result<Json> {
        Ok(match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Value::Str(s) => Json::String(s.clone()),
            Value::List(items) => Json::Array(
                items
                    .iter()
                    .map(|i| self.output(i))
                    .collect::<Result<_>>()?,
            ),
            Value::Map(m) => Json::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), self.output(v)?)))
                    .collect::<Result<Map<_, _>>>()?,
            ),
            Value::Node(n) => self.node_json(n)?,
            Value::Rel(r) => edge_json(&Resolver::edge(self, r)),
            Value::Path(p) => {
                let mut out = Vec::with_capacity(p.nodes.len() + p.rels.len());
                for (i, n) in p.nodes.iter().enumerate() {
                    out.push(self.node_json(n)?);
                    if let Some(r) = p.rels.get(i) {
                        out.push(edge_json(&Resolver::edge(self, r)));
                    }
                }
                Json::Array(out)
            }
        })
    }

    fn node_json(&self, n: &NodeHandle) -> Result<Json> {
        let rec = Resolver::node(self, n)?;
        let mut obj = Map::new();
        obj.insert("id".into(), Json::String(n.id.clone()));
        obj.insert(
            "type".into(),
            rec.as_ref()
                .and_then(|r| r.label.clone())
                .map_or(Json::Null, Json::String),
        );
        obj.insert(
            "data".into(),
            Json::Object(rec.map(|r| r.props.clone()).unwrap_or_default()),
        );
        Ok(Json::Object(obj))
    }
}

fn edge_json(e: &EdgeRecord) -> Json {
    let mut obj = Map::new();
    obj.insert("from".into(), Json::String(e.from.clone()));
    obj.insert("relation".into(), Json::String(e.rel.clone()));
    obj.insert("to".into(), Json::String(e.to.clone()));
    obj.insert("data".into(), Json::Object(e.props.clone()));
    Json::Object(obj)
}

pub(crate) fn too_many_rows(max: usize) -> CypherError {
    CypherError::limit(format!(
        "the query would hold more than {max} rows in memory (for ORDER BY, DISTINCT, \
         aggregation, an update clause or the result; each element of a collected list \
         counts as one); add a LIMIT or raise ExecOptions::max_rows"
    ))
}

/// Runs a compiled statement.
pub(crate) fn run(plan: &Plan, store: &mut dyn Backend, opts: ExecOptions) -> Result<QueryResult> {
    let mut state = State::new(opts);
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    let dedupe = plan.union_all.iter().any(|all| !all);
    for part in &plan.parts {
        for row in run_part(part, store, &mut state)? {
            if dedupe && !seen.insert(Json::Array(row.clone()).to_string()) {
                continue;
            }
            rows.push(row);
        }
    }
    Ok(QueryResult {
        columns: plan.parts[0].columns.clone(),
        rows,
        counters: state.counters,
    })
}

fn run_part(part: &PartPlan, store: &mut dyn Backend, state: &mut State) -> Result<Vec<Vec<Json>>> {
    let mut ops: Vec<Op<'_>> = part.ops.iter().map(|o| Op::new(o, part.width)).collect();
    {
        let cx = Ctx {
            store: &*store,
            state: &*state,
        };
        push(&mut ops, vec![Value::Null; part.width], &cx)?;
    }
    finish(&mut ops, store, state)?;
    Ok(match ops.pop() {
        Some(Op::Return { rows, .. }) => rows,
        _ => Vec::new(),
    })
}

/// An operator with its running state.
enum Op<'p> {
    Read(&'p OpPlan),
    Project(Box<Projector<'p>>),
    Write {
        plan: &'p OpPlan,
        rows: Vec<Row>,
        /// What `rows` weigh ([`row_weight`]).
        held: usize,
    },
    Return {
        slots: &'p [usize],
        rows: Vec<Vec<Json>>,
        /// What `rows` weigh ([`row_weight`]).
        held: usize,
    },
}

/// What the row budget (`max_rows`) charges for a row of `values`: 1, plus the elements of
/// the lists and maps in it, so rows of scalars count as rows and rows holding large lists
/// count their elements too.
fn row_weight<'v>(values: impl Iterator<Item = &'v Value>) -> usize {
    values.fold(1, |w, v| w.saturating_add(v.weight() - 1))
}

/// Adds `weight` to `held`; fails past the row budget.
fn charge(held: &mut usize, weight: usize, cx: &Ctx<'_>) -> Result<()> {
    *held = held.saturating_add(weight);
    if *held > cx.state.opts.max_rows {
        return Err(too_many_rows(cx.state.opts.max_rows));
    }
    Ok(())
}

impl<'p> Op<'p> {
    fn new(plan: &'p OpPlan, width: usize) -> Op<'p> {
        match plan {
            OpPlan::Project(p) => Op::Project(Box::new(Projector::new(p, width))),
            OpPlan::Return { slots } => Op::Return {
                slots,
                rows: Vec::new(),
                held: 0,
            },
            p if p.writes() => Op::Write {
                plan: p,
                rows: Vec::new(),
                held: 0,
            },
            p => Op::Read(p),
        }
    }
}

/// Hands `row` to the first operator of `ops`.
fn push(ops: &mut [Op<'_>], row: Row, cx: &Ctx<'_>) -> Result<Flow> {
    crate::stack::deeper(|| push_here(ops, row, cx))
}

/// [`push`] on the current stack segment.
fn push_here(ops: &mut [Op<'_>], mut row: Row, cx: &Ctx<'_>) -> Result<Flow> {
    let Some((op, rest)) = ops.split_first_mut() else {
        return Ok(Flow::Continue);
    };
    match op {
        Op::Read(OpPlan::Match(m)) => {
            let mut found = false;
            let flow = run_steps(&m.steps, &mut row, cx, &mut |r: &Row| {
                found = true;
                push(rest, r.clone(), cx)
            })?;
            if flow == Flow::Stop || found || !m.optional {
                return Ok(flow);
            }
            for &s in &m.new_slots {
                row[s] = Value::Null;
            }
            push(rest, row, cx)
        }
        Op::Read(OpPlan::Unwind { expr, slot }) => {
            let items = match eval(expr, &cx.env(&row))? {
                Value::List(items) => items,
                Value::Null => return Ok(Flow::Continue),
                other => vec![other],
            };
            for item in items {
                let mut r = row.clone();
                r[*slot] = item;
                if push(rest, r, cx)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
            Ok(Flow::Continue)
        }
        Op::Read(OpPlan::Filter(cond)) => {
            if truthy(&eval(cond, &cx.env(&row))?)? {
                push(rest, row, cx)
            } else {
                Ok(Flow::Continue)
            }
        }
        Op::Read(other) => unreachable!("not a read operator: {other:?}"),
        Op::Project(p) => p.push(row, rest, cx),
        Op::Write { rows, held, .. } => {
            charge(held, row_weight(row.iter()), cx)?;
            rows.push(row);
            Ok(Flow::Continue)
        }
        Op::Return { slots, rows, held } => {
            charge(held, row_weight(slots.iter().map(|&s| &row[s])), cx)?;
            let out = slots
                .iter()
                .map(|&s| cx.output(&row[s]))
                .collect::<Result<Vec<_>>>()?;
            rows.push(out);
            Ok(Flow::Continue)
        }
    }
}

/// Tells each operator of `ops`, in order, that no more rows come: each flushes what it
/// holds to the ones after it.
fn finish(mut ops: &mut [Op<'_>], store: &mut dyn Backend, state: &mut State) -> Result<()> {
    // A loop, not a recursion per operator: a query may have thousands of clauses.
    while let Some((op, rest)) = ops.split_first_mut() {
        match op {
            Op::Project(p) => {
                let cx = Ctx {
                    store: &*store,
                    state: &*state,
                };
                p.finish(rest, &cx)?;
            }
            Op::Write { plan, rows, held } => {
                *held = 0;
                let out = run_write(plan, std::mem::take(rows), store, state)?;
                let cx = Ctx {
                    store: &*store,
                    state: &*state,
                };
                for row in out {
                    if push(rest, row, &cx)? == Flow::Stop {
                        break;
                    }
                }
            }
            Op::Read(_) | Op::Return { .. } => {}
        }
        ops = rest;
    }
    Ok(())
}

/// One group of an aggregating projection.
struct Group {
    first: Row,
    keys: Vec<Value>,
    accs: Vec<Acc>,
}

/// `WITH` / `RETURN`: projection, aggregation, DISTINCT, ORDER BY, SKIP, LIMIT.
struct Projector<'p> {
    plan: &'p ProjectPlan,
    width: usize,
    skipped: usize,
    emitted: usize,
    stopped: bool,
    seen: HashSet<Vec<Key>>,
    sorted: Vec<(Vec<Value>, Row)>,
    group_index: HashMap<Vec<Key>, usize>,
    groups: Vec<Group>,
    held: usize,
}

impl<'p> Projector<'p> {
    fn new(plan: &'p ProjectPlan, width: usize) -> Projector<'p> {
        Projector {
            plan,
            width,
            skipped: 0,
            emitted: 0,
            stopped: plan.limit == Some(0),
            seen: HashSet::new(),
            sorted: Vec::new(),
            group_index: HashMap::new(),
            groups: Vec::new(),
            held: 0,
        }
    }

    fn hold(&mut self, n: usize, cx: &Ctx<'_>) -> Result<()> {
        self.held += n;
        if self.held > cx.state.opts.max_rows {
            return Err(too_many_rows(cx.state.opts.max_rows));
        }
        Ok(())
    }

    fn push(&mut self, row: Row, rest: &mut [Op<'_>], cx: &Ctx<'_>) -> Result<Flow> {
        if self.stopped && !self.plan.aggregating {
            return Ok(Flow::Stop);
        }
        let plan = self.plan;
        if plan.aggregating {
            return self.aggregate(row, cx).map(|()| Flow::Continue);
        }
        let env = cx.env(&row);
        let values = plan
            .items
            .iter()
            .map(|(_, e, _)| eval(e, &env))
            .collect::<Result<Vec<_>>>()?;
        if plan.distinct && !self.seen.insert(values.iter().map(Value::key).collect()) {
            return Ok(Flow::Continue);
        }
        if plan.distinct {
            self.hold(1, cx)?;
        }
        if plan.order.is_empty() {
            let out = self.fresh_row(row.len(), values);
            return self.emit(out, rest, cx);
        }
        // ORDER BY keys may read the old variables: evaluate them on the combined row.
        let mut combined = row;
        for ((slot, ..), v) in plan.items.iter().zip(&values) {
            combined[*slot] = v.clone();
        }
        let keys = plan
            .order
            .iter()
            .map(|(e, _)| eval(e, &cx.env(&combined)))
            .collect::<Result<Vec<_>>>()?;
        let out = self.fresh_row(combined.len(), values);
        self.sorted.push((keys, out));
        self.hold(1, cx)?;
        if let Some(limit) = plan.limit {
            let keep = plan.skip.saturating_add(limit);
            if self.sorted.len() >= keep.saturating_mul(2).max(1024) {
                self.sort();
                self.held -= self.sorted.len().saturating_sub(keep);
                self.sorted.truncate(keep);
            }
        }
        Ok(Flow::Continue)
    }

    fn fresh_row(&self, width: usize, values: Vec<Value>) -> Row {
        let mut out = vec![Value::Null; width];
        for ((slot, ..), v) in self.plan.items.iter().zip(values) {
            out[*slot] = v;
        }
        out
    }

    fn aggregate(&mut self, row: Row, cx: &Ctx<'_>) -> Result<()> {
        let plan = self.plan;
        let env = cx.env(&row);
        let keys = plan
            .items
            .iter()
            .filter(|(_, _, agg)| !agg)
            .map(|(_, e, _)| eval(e, &env))
            .collect::<Result<Vec<_>>>()?;
        let key: Vec<Key> = keys.iter().map(Value::key).collect();
        let index = match self.group_index.get(&key) {
            Some(&i) => i,
            None => {
                self.group_index.insert(key, self.groups.len());
                self.groups.push(Group {
                    first: row.clone(),
                    keys,
                    accs: plan.aggs.iter().map(Acc::new).collect(),
                });
                self.hold(1, cx)?;
                self.groups.len() - 1
            }
        };
        let mut grew = 0;
        for (spec, acc) in plan.aggs.iter().zip(&mut self.groups[index].accs) {
            let value = match &spec.arg {
                Some(arg) => Some(eval(arg, &env)?),
                None => None,
            };
            let before = acc.held();
            acc.add(value)?;
            grew += acc.held() - before;
        }
        self.hold(grew, cx)
    }

    fn emit(&mut self, out: Row, rest: &mut [Op<'_>], cx: &Ctx<'_>) -> Result<Flow> {
        if self.stopped {
            return Ok(Flow::Stop);
        }
        if self.skipped < self.plan.skip {
            self.skipped += 1;
            return Ok(Flow::Continue);
        }
        let flow = push(rest, out, cx)?;
        self.emitted += 1;
        if flow == Flow::Stop || self.plan.limit.is_some_and(|l| self.emitted >= l) {
            self.stopped = true;
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }

    fn sort(&mut self) {
        let order = &self.plan.order;
        self.sorted.sort_by(|(a, _), (b, _)| {
            for (i, (_, desc)) in order.iter().enumerate() {
                let ord = a[i].order(&b[i]);
                let ord = if *desc { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }

    fn finish(&mut self, rest: &mut [Op<'_>], cx: &Ctx<'_>) -> Result<()> {
        let plan = self.plan;
        if plan.aggregating {
            let no_keys = plan.items.iter().all(|(_, _, agg)| *agg);
            if self.groups.is_empty() && no_keys {
                self.groups.push(Group {
                    first: vec![Value::Null; self.width],
                    keys: Vec::new(),
                    accs: plan.aggs.iter().map(Acc::new).collect(),
                });
            }
            for group in std::mem::take(&mut self.groups) {
                let aggs = group
                    .accs
                    .into_iter()
                    .map(Acc::finish)
                    .collect::<Result<Vec<Value>>>()?;
                let mut keys = group.keys.into_iter();
                let mut out = vec![Value::Null; group.first.len()];
                for (slot, e, agg) in &plan.items {
                    out[*slot] = if *agg {
                        let env = Env {
                            row: &group.first,
                            aggs: &aggs,
                            res: cx,
                        };
                        eval(e, &env)?
                    } else {
                        keys.next().expect("one key per grouping item")
                    };
                }
                if plan.distinct {
                    let key = plan.items.iter().map(|(s, ..)| out[*s].key()).collect();
                    if !self.seen.insert(key) {
                        continue;
                    }
                }
                let env = Env {
                    row: &out,
                    aggs: &aggs,
                    res: cx,
                };
                let sort_keys = plan
                    .order
                    .iter()
                    .map(|(e, _)| eval(e, &env))
                    .collect::<Result<Vec<_>>>()?;
                self.sorted.push((sort_keys, out));
            }
        } else if plan.order.is_empty() {
            return Ok(());
        }
        if !plan.order.is_empty() {
            self.sort();
        }
        for (_, row) in std::mem::take(&mut self.sorted) {
            if self.emit(row, rest, cx)? == Flow::Stop {
                break;
            }
        }
        Ok(())
    }
}
