//! Runs the steps of a planned `MATCH` against the store: scans and id lookups, fixed and
//! variable-length expansions (an iterative depth-first walk with relationship isomorphism and
//! the `max_paths` budget), filters and path construction.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use serde_json::Value as Json;

use crate::error::{CypherError, Result};
use crate::exec::{Ctx, Flow, Row};
use crate::expr::{CExpr, eval, truthy};
use crate::plan::{Expand, IdLookup, PathElem, Step};
use crate::store::{Dir, EdgeRecord};
use crate::value::{NodeHandle, PathValue, Value};

/// Runs `steps` on `row`, calling `emit` for each complete match. Steps overwrite their own
/// slots in `row` as they go. Filters and paths loop rather than recurse; scans and expansions
/// recurse, on a new stack segment when the stack runs low ([`crate::stack`]).
pub(crate) fn run_steps(
    steps: &[Step],
    row: &mut Row,
    cx: &Ctx<'_>,
    emit: &mut dyn FnMut(&Row) -> Result<Flow>,
) -> Result<Flow> {
    crate::stack::deeper(|| run_steps_here(steps, row, cx, emit))
}

/// [`run_steps`] on the current stack segment.
fn run_steps_here(
    mut steps: &[Step],
    row: &mut Row,
    cx: &Ctx<'_>,
    emit: &mut dyn FnMut(&Row) -> Result<Flow>,
) -> Result<Flow> {
    loop {
        let Some((step, rest)) = steps.split_first() else {
            return emit(row);
        };
        match step {
            Step::Filter(cond) => {
                if !truthy(&eval(cond, &cx.env(row))?)? {
                    return Ok(Flow::Continue);
                }
            }
            Step::Path { slot, elems } => row[*slot] = build_path(elems, row)?,
            Step::Scan {
                slot,
                ids,
                label,
                props,
            } => {
                return scan(
                    *slot,
                    ids.as_ref(),
                    label.as_deref(),
                    props,
                    rest,
                    row,
                    cx,
                    emit,
                );
            }
            Step::Expand(x) if x.range.is_some() => return var_expand(x, rest, row, cx, emit),
            Step::Expand(x) => return expand(x, rest, row, cx, emit),
        }
        steps = rest;
    }
}

/// A value as plain JSON for a store filter (`None` for nodes, relationships, paths and
/// non-finite floats, which no stored property equals).
fn plain_json(v: &Value) -> Option<Json> {
    Some(match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => Json::Number(serde_json::Number::from_f64(*f)?),
        Value::Str(s) => Json::String(s.clone()),
        Value::List(items) => Json::Array(items.iter().map(plain_json).collect::<Option<_>>()?),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| Some((k.clone(), plain_json(v)?)))
                .collect::<Option<_>>()?,
        ),
        Value::Node(_) | Value::Rel(_) | Value::Path(_) => return None,
    })
}

#[allow(clippy::too_many_arguments)]
fn scan(
    slot: usize,
    ids: Option<&IdLookup>,
    label: Option<&str>,
    props: &[(String, CExpr)],
    rest: &[Step],
    row: &mut Row,
    cx: &Ctx<'_>,
    emit: &mut dyn FnMut(&Row) -> Result<Flow>,
) -> Result<Flow> {
    if let Some(ids) = ids {
        let list = match ids {
            IdLookup::One(e) => match eval(e, &cx.env(row))? {
                Value::Str(s) => vec![s],
                _ => Vec::new(),
            },
            IdLookup::Many(e) => match eval(e, &cx.env(row))? {
                Value::List(items) => {
                    let mut ids: Vec<String> = Vec::new();
                    for item in items {
                        if let Value::Str(s) = item
                            && !ids.contains(&s)
                        {
                            ids.push(s);
                        }
                    }
                    ids
                }
                Value::Null => Vec::new(),
                other => {
                    return Err(CypherError::runtime(format!(
                        "IN needs a list on the right but got {}",
                        other.type_name()
                    )));
                }
            },
        };
        for id in list {
            if let Some(rec) = cx.store.node(&id)? {
                row[slot] = Value::Node(NodeHandle::loaded(rec));
                if run_steps(rest, row, cx, emit)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
        }
        return Ok(Flow::Continue);
    }
    let mut filter = Vec::with_capacity(props.len());
    for (key, e) in props {
        let v = eval(e, &cx.env(row))?;
        if v.is_null() {
            // `n.key = null` is never true.
            return Ok(Flow::Continue);
        }
        if let Some(json) = plain_json(&v) {
            filter.push((key.clone(), json));
        }
    }
    for rec in cx.store.scan_nodes(label, &filter)? {
        row[slot] = Value::Node(NodeHandle::loaded(rec?));
        if run_steps(rest, row, cx, emit)? == Flow::Stop {
            return Ok(Flow::Stop);
        }
    }
    Ok(Flow::Continue)
}

/// The node id in `slot`, `None` for null.
fn node_id(row: &Row, slot: usize) -> Result<Option<&str>> {
    match &row[slot] {
        Value::Node(n) => Ok(Some(&n.id)),
        Value::Null => Ok(None),
        other => Err(CypherError::runtime(format!(
            "a pattern needs a node here but the variable holds {}",
            other.type_name()
        ))),
    }
}

/// The end of `e` that is not `here` when walking in `dir`.
fn other_end<'e>(e: &'e EdgeRecord, here: &str, dir: Dir) -> &'e str {
    match dir {
        Dir::Out => &e.to,
        Dir::In => &e.from,
        Dir::Both => {
            if e.from == here {
                &e.to
            } else {
                &e.from
            }
        }
    }
}

/// Edge property constraints, evaluated once per expansion.
fn edge_props(x: &Expand, row: &Row, cx: &Ctx<'_>) -> Result<Vec<(String, Value)>> {
    x.props
        .iter()
        .map(|(k, e)| Ok((k.clone(), eval(e, &cx.env(row))?)))
        .collect()
}

fn props_match(e: &EdgeRecord, props: &[(String, Value)]) -> bool {
    props.iter().all(|(k, v)| {
        e.props
            .get(k)
            .is_some_and(|p| Value::from_json(p).equals(v) == Some(true))
    })
}

/// The edges to follow from `node`: right type, right properties, self-loops once.
fn fetch(
    x: &Expand,
    node: &str,
    props: &[(String, Value)],
    cx: &Ctx<'_>,
) -> Result<Vec<Rc<EdgeRecord>>> {
    let edges = cx.store.edges(node, x.dir, &x.types)?;
    let mut out: Vec<Rc<EdgeRecord>> = Vec::with_capacity(edges.len());
    for e in edges {
        if !x.types.is_empty() && !x.types.contains(&e.rel) {
            continue;
        }
        if !props.is_empty() && !props_match(&e, props) {
            continue;
        }
        if x.dir == Dir::Both && e.from == e.to && out.iter().any(|o| o.same_edge(&e)) {
            continue;
        }
        out.push(Rc::new(e));
    }
    Ok(out)
}

/// False when `e` is already bound to another relationship of the clause.
fn unique(e: &EdgeRecord, slots: &[usize], row: &Row) -> bool {
    slots.iter().all(|&s| match &row[s] {
        Value::Rel(r) => !r.same_edge(e),
        Value::List(items) => items
            .iter()
            .all(|i| !matches!(i, Value::Rel(r) if r.same_edge(e))),
        _ => true,
    })
}

/// The step's start node and, when its far end is already bound, that node; `None` when the
/// row binds either to something that is not a node (the row matches nothing).
fn endpoints(x: &Expand, row: &Row) -> Result<Option<(String, Option<String>)>> {
    let Some(from) = node_id(row, x.from)? else {
        return Ok(None);
    };
    let target = if x.to_bound {
        match node_id(row, x.to)? {
            Some(t) => Some(t.to_owned()),
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some((from.to_owned(), target)))
}

fn expand(
    x: &Expand,
    rest: &[Step],
    row: &mut Row,
    cx: &Ctx<'_>,
    emit: &mut dyn FnMut(&Row) -> Result<Flow>,
) -> Result<Flow> {
    let Some((from, target)) = endpoints(x, row)? else {
        return Ok(Flow::Continue);
    };
    let props = edge_props(x, row, cx)?;
    let edges: Vec<Rc<EdgeRecord>> = if x.rel_bound {
        match &row[x.rel] {
            Value::Rel(r) => {
                let r = cx.state_edge(r);
                let touches = match x.dir {
                    Dir::Out => r.from == from,
                    Dir::In => r.to == from,
                    Dir::Both => r.from == from || r.to == from,
                };
                let typed = x.types.is_empty() || x.types.contains(&r.rel);
                if touches && typed && props_match(&r, &props) {
                    vec![r]
                } else {
                    Vec::new()
                }
            }
            Value::Null => return Ok(Flow::Continue),
            other => {
                return Err(CypherError::runtime(format!(
                    "a pattern needs a relationship here but the variable holds {}",
                    other.type_name()
                )));
            }
        }
    } else if let (Some(to), false, Dir::Out | Dir::In) = (&target, x.types.is_empty(), x.dir) {
        // Both ends known: look the edge up instead of listing all of them.
        let mut found = Vec::new();
        for rel in &x.types {
            let (a, b) = if x.dir == Dir::Out {
                (from.as_str(), to.as_str())
            } else {
                (to.as_str(), from.as_str())
            };
            if let Some(e) = cx.store.edge(a, rel, b)?
                && props_match(&e, &props)
            {
                found.push(Rc::new(e));
            }
        }
        found
    } else {
        fetch(x, &from, &props, cx)?
    };
    for e in edges {
        if !unique(&e, &x.unique_against, row) {
            continue;
        }
        let other = other_end(&e, &from, x.dir);
        match &target {
            Some(t) if t != other => continue,
            Some(_) => {}
            None => row[x.to] = Value::Node(NodeHandle::new(other)),
        }
        row[x.rel] = Value::Rel(e);
        if run_steps(rest, row, cx, emit)? == Flow::Stop {
            return Ok(Flow::Stop);
        }
    }
    Ok(Flow::Continue)
}

impl Ctx<'_> {
    fn state_edge(&self, e: &Rc<EdgeRecord>) -> Rc<EdgeRecord> {
        crate::expr::Resolver::edge(self, e)
    }

    fn count_expansion(&self) -> Result<()> {
        let n = self.state.expanded.get() + 1;
        self.state.expanded.set(n);
        if n > self.state.opts.max_paths {
            return Err(CypherError::limit(format!(
                "the pattern expanded to more than {} paths; add a LIMIT, narrow the relation \
                 types or lower the maximum depth (ExecOptions::max_paths)",
                self.state.opts.max_paths
            )));
        }
        Ok(())
    }
}

/// One level of the depth-first walk: the edges at a node and how many were tried.
struct Frame {
    node: String,
    edges: Vec<Rc<EdgeRecord>>,
    next: usize,
}

fn var_expand(
    x: &Expand,
    rest: &[Step],
    row: &mut Row,
    cx: &Ctx<'_>,
    emit: &mut dyn FnMut(&Row) -> Result<Flow>,
) -> Result<Flow> {
    let (min, max) = x.range.expect("a variable-length step");
    let Some((start, target)) = endpoints(x, row)? else {
        return Ok(Flow::Continue);
    };
    let props = edge_props(x, row, cx)?;
    if min == 0 && target.as_ref().is_none_or(|t| *t == start) {
        if !x.to_bound {
            row[x.to] = row[x.from].clone();
        }
        row[x.rel] = Value::List(Vec::new());
        if run_steps(rest, row, cx, emit)? == Flow::Stop {
            return Ok(Flow::Stop);
        }
    }
    if max == 0 {
        return Ok(Flow::Continue);
    }
    let mut path = Trail::default();
    let mut stack = vec![Frame {
        edges: fetch(x, &start, &props, cx)?,
        node: start,
        next: 0,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(e) = top.edges.get(top.next).cloned() else {
            stack.pop();
            path.pop();
            continue;
        };
        top.next += 1;
        cx.count_expansion()?;
        if path.contains(&e) || !unique(&e, &x.unique_against, row) {
            continue;
        }
        let next = other_end(&e, &top.node, x.dir).to_owned();
        path.push(e);
        let depth = path.edges.len() as u64;
        if depth >= min && target.as_ref().is_none_or(|t| *t == next) {
            if !x.to_bound {
                row[x.to] = Value::Node(NodeHandle::new(next.as_str()));
            }
            if x.keep_list {
                let mut rels: Vec<Value> =
                    path.edges.iter().map(|r| Value::Rel(r.clone())).collect();
                if x.reversed {
                    rels.reverse();
                }
                row[x.rel] = Value::List(rels);
            }
            if run_steps(rest, row, cx, emit)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        if depth < max {
            let edges = fetch(x, &next, &props, cx)?;
            stack.push(Frame {
                node: next,
                edges,
                next: 0,
            });
        } else {
            path.pop();
        }
    }
    Ok(Flow::Continue)
}

/// The edges of the current walk, with hashes so that "already on this path?" stays cheap
/// on long paths.
#[derive(Default)]
struct Trail {
    edges: Vec<Rc<EdgeRecord>>,
    hashes: HashMap<u64, u32>,
}

impl Trail {
    /// Up to this many edges a linear scan beats hashing.
    const SHORT: usize = 8;

    fn hash(e: &EdgeRecord) -> u64 {
        let mut h = DefaultHasher::new();
        (&e.from, &e.rel, &e.to).hash(&mut h);
        h.finish()
    }

    fn contains(&self, e: &EdgeRecord) -> bool {
        if self.edges.len() <= Self::SHORT {
            return self.edges.iter().any(|p| p.same_edge(e));
        }
        self.hashes.get(&Self::hash(e)).is_some_and(|&n| n > 0)
            && self.edges.iter().any(|p| p.same_edge(e))
    }

    fn push(&mut self, e: Rc<EdgeRecord>) {
        self.edges.push(e);
        match self.edges.len() {
            n if n <= Self::SHORT => {}
            n if n == Self::SHORT + 1 => {
                for e in &self.edges {
                    *self.hashes.entry(Self::hash(e)).or_default() += 1;
                }
            }
            _ => {
                let e = self.edges.last().expect("just pushed");
                *self.hashes.entry(Self::hash(e)).or_default() += 1;
            }
        }
    }

    fn pop(&mut self) {
        let len = self.edges.len();
        if let Some(e) = self.edges.pop() {
            if len == Self::SHORT + 1 {
                self.hashes.clear();
            } else if len > Self::SHORT + 1
                && let Some(n) = self.hashes.get_mut(&Self::hash(&e))
            {
                *n -= 1;
            }
        }
    }
}

/// Builds a path value from the pattern's slots (null when any part is null).
fn build_path(elems: &[PathElem], row: &Row) -> Result<Value> {
    let mut nodes: Vec<Rc<NodeHandle>> = Vec::new();
    let mut rels: Vec<Rc<EdgeRecord>> = Vec::new();
    for elem in elems {
        match elem {
            PathElem::Node(s) => {
                let n = match &row[*s] {
                    Value::Node(n) => n.clone(),
                    Value::Null => return Ok(Value::Null),
                    other => {
                        return Err(CypherError::runtime(format!(
                            "a path needs nodes but got {}",
                            other.type_name()
                        )));
                    }
                };
                if nodes.len() > rels.len() {
                    nodes.pop();
                }
                nodes.push(n);
            }
            PathElem::Rel(s) => match &row[*s] {
                Value::Rel(r) => rels.push(r.clone()),
                _ => return Ok(Value::Null),
            },
            PathElem::Rels(s) => match &row[*s] {
                Value::List(items) => {
                    for item in items {
                        let Value::Rel(r) = item else {
                            return Ok(Value::Null);
                        };
                        let here = nodes.last().map_or("", |n| n.id.as_str());
                        let next = if r.from == here { &r.to } else { &r.from };
                        let handle = NodeHandle::new(next.as_str());
                        rels.push(r.clone());
                        nodes.push(handle);
                    }
                }
                _ => return Ok(Value::Null),
            },
        }
    }
    Ok(Value::Path(Rc::new(PathValue { nodes, rels })))
}
