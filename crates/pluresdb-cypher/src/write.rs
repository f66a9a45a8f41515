//! Update clauses: CREATE, MERGE, SET / REMOVE and [DETACH] DELETE. Each runs after its
//! input is complete, then hands its rows on.

use std::rc::Rc;

use serde_json::{Map, Value as Json};

use crate::backend::Backend;
use crate::error::{CypherError, Result};
use crate::exec::{Ctx, Flow, Row, State, edge_key};
use crate::expr::{CExpr, Env, Resolver, eval};
use crate::matcher::run_steps;
use crate::plan::{CreateElem, CreatePattern, MergePlan, NodeSpec, OpPlan, PathElem, SetOp};
use crate::store::{Dir, EdgeRecord, NodeRecord};
use crate::value::{NodeHandle, PathValue, Value};

/// Runs an update operator over all its input rows; returns the rows to pass on.
pub(crate) fn run_write(
    plan: &OpPlan,
    rows: Vec<Row>,
    store: &mut dyn Backend,
    state: &mut State,
) -> Result<Vec<Row>> {
    let mut w = Writer { store, state };
    match plan {
        OpPlan::Create(patterns) => {
            let mut out = Vec::with_capacity(rows.len());
            for mut row in rows {
                for p in patterns {
                    w.create(p, &mut row, false)?;
                }
                out.push(row);
            }
            Ok(out)
        }
        OpPlan::Merge(m) => {
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                w.merge(m, row, &mut out)?;
            }
            Ok(out)
        }
        OpPlan::Set(ops) => {
            for row in &rows {
                for op in ops {
                    w.set(op, row)?;
                }
            }
            Ok(rows)
        }
        OpPlan::Delete { exprs, detach } => {
            w.delete(exprs, *detach, &rows)?;
            Ok(rows)
        }
        other => unreachable!("not an update operator: {other:?}"),
    }
}

/// A value as JSON to store: no nodes, relationships, paths or non-finite numbers.
pub(crate) fn storable(v: &Value) -> Result<Json> {
    Ok(match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => Json::Number(serde_json::Number::from_f64(*f).ok_or_else(|| {
            CypherError::runtime(format!("cannot store {f} as a property value"))
        })?),
        Value::Str(s) => Json::String(s.clone()),
        Value::List(items) => Json::Array(items.iter().map(storable).collect::<Result<_>>()?),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), storable(v)?)))
                .collect::<Result<_>>()?,
        ),
        other => {
            return Err(CypherError::runtime(format!(
                "cannot store a {} as a property value",
                other.type_name()
            )));
        }
    })
}

struct Writer<'a> {
    store: &'a mut dyn Backend,
    state: &'a mut State,
}

impl Writer<'_> {
    fn cx(&self) -> Ctx<'_> {
        Ctx {
            store: &*self.store,
            state: &*self.state,
        }
    }

    fn eval(&self, e: &CExpr, row: &Row) -> Result<Value> {
        let cx = self.cx();
        eval(e, &Env::new(row, &cx))
    }

    fn node_record(&self, n: &NodeHandle) -> Result<Rc<NodeRecord>> {
        if self.state.deleted_nodes.contains(&n.id) {
            return Err(CypherError::runtime(format!(
                "node {:?} was deleted earlier in this query",
                n.id
            )));
        }
        self.cx()
            .node(n)?
            .ok_or_else(|| CypherError::runtime(format!("node {:?} does not exist", n.id)))
    }

    /// Evaluates a property map for CREATE / MERGE: nulls dropped (MERGE: an error), `id`
    /// taken out for nodes.
    fn create_props(
        &self,
        props: Option<&CExpr>,
        row: &Row,
        merge: bool,
        take_id: bool,
    ) -> Result<(Option<String>, Map<String, Json>)> {
        let mut out = Map::new();
        let mut id = None;
        let Some(e) = props else {
            return Ok((None, out));
        };
        let map = match self.eval(e, row)? {
            Value::Map(m) => m,
            Value::Null => return Ok((None, out)),
            other => {
                return Err(CypherError::runtime(format!(
                    "properties must be a map, not {}",
                    other.type_name()
                )));
            }
        };
        for (k, v) in map {
            if v.is_null() {
                if merge {
                    return Err(CypherError::runtime(format!(
                        "cannot MERGE with a null value for property `{k}`"
                    )));
                }
                continue;
            }
            if take_id && k == "id" {
                match v {
                    Value::Str(s) if !s.is_empty() => id = Some(s),
                    other => {
                        return Err(CypherError::runtime(format!(
                            "a node id must be a non-empty string, not {}",
                            other.type_name()
                        )));
                    }
                }
                continue;
            }
            out.insert(k, storable(&v)?);
        }
        Ok((id, out))
    }

    fn create_node(&mut self, spec: &NodeSpec, row: &Row, merge: bool) -> Result<Rc<NodeHandle>> {
        let (id, props) = self.create_props(spec.props.as_ref(), row, merge, true)?;
        if let Some(id) = &id
            && self.store.node(id)?.is_some()
        {
            // MERGE creates a node only when its whole pattern matched nothing: the id is
            // taken by a node with another label or other properties (or, for a path, the
            // node exists but the rest of the pattern does not).
            return Err(CypherError::runtime(if merge {
                format!(
                    "MERGE would create a node with id {id:?}, but a node with that id exists \
                     and does not match the whole pattern (another label or other properties, \
                     or the rest of the path is missing); MERGE the node by its id alone, then \
                     SET its label and properties or MERGE the relationship from it"
                )
            } else {
                format!("a node with id {id:?} already exists; use MERGE to match or create it")
            }));
        }
        let rec = self
            .store
            .create_node(id.as_deref(), spec.label.as_deref(), &props)?;
        let c = &mut self.state.counters;
        c.nodes_created += 1;
        c.properties_set += props.len() as u64;
        c.labels_added += u64::from(spec.label.is_some());
        self.state.deleted_nodes.remove(&rec.id);
        self.state.nodes.remove(&rec.id);
        self.state.cache.borrow_mut().remove(&rec.id);
        Ok(NodeHandle::loaded(rec))
    }

    fn bound_node(&self, row: &Row, slot: usize) -> Result<Rc<NodeHandle>> {
        match &row[slot] {
            Value::Node(n) => {
                if self.state.deleted_nodes.contains(&n.id) {
                    return Err(CypherError::runtime(format!(
                        "node {:?} was deleted earlier in this query",
                        n.id
                    )));
                }
                Ok(n.clone())
            }
            Value::Null => Err(CypherError::runtime(
                "cannot create a relationship to or from a null node (did an OPTIONAL MATCH \
                 find nothing?)",
            )),
            other => Err(CypherError::runtime(format!(
                "a relationship needs nodes at its ends, not {}",
                other.type_name()
            ))),
        }
    }

    fn create(&mut self, p: &CreatePattern, row: &mut Row, merge: bool) -> Result<()> {
        for elem in &p.elems {
            match elem {
                CreateElem::Node { slot, spec } => match spec {
                    Some(spec) => {
                        let n = self.create_node(spec, row, merge)?;
                        row[*slot] = Value::Node(n);
                    }
                    None => {
                        self.bound_node(row, *slot)?;
                    }
                },
                CreateElem::Rel {
                    slot,
                    from,
                    to,
                    rel,
                    props,
                } => {
                    let (a, b) = (self.bound_node(row, *from)?, self.bound_node(row, *to)?);
                    let (_, props) = self.create_props(props.as_ref(), row, merge, false)?;
                    let e = self.link(&a.id, rel, &b.id, props, merge)?;
                    row[*slot] = Value::Rel(e);
                }
            }
        }
        if let Some((slot, elems)) = &p.path {
            row[*slot] = path_of(elems, row);
        }
        Ok(())
    }

    /// Creates an edge; PluresDB keeps one edge per (from, type, to), so an existing one gets
    /// the properties merged in instead. For MERGE, an existing edge with other values for
    /// the pattern's properties is an error: Neo4j would add a second relationship and keep
    /// the first one's values, merging in would overwrite them.
    fn link(
        &mut self,
        from: &str,
        rel: &str,
        to: &str,
        mut props: Map<String, Json>,
        merge: bool,
    ) -> Result<Rc<EdgeRecord>> {
        let existing = self.store.edge(from, rel, to)?;
        if merge && let Some(e) = &existing {
            if let Some((k, _)) = props.iter().find(|(k, v)| {
                e.props.get(*k).is_none_or(|old| {
                    Value::from_json(old).equals(&Value::from_json(v)) != Some(true)
                })
            }) {
                let has = match e.props.get(k) {
                    Some(old) => format!("with {k}: {old}"),
                    None => format!("without {k}"),
                };
                return Err(CypherError::runtime(format!(
                    "MERGE would create a relationship ({from:?})-[:{rel}]->({to:?}), but one \
                     exists {has} and PluresDB keeps one {rel} relationship from {from:?} to \
                     {to:?}; MERGE the relationship without `{k}`, then SET it (ON CREATE SET / \
                     ON MATCH SET)"
                )));
            }
            // It has the pattern's values already.
            props.clear();
        }
        let set = props.len() as u64;
        // A relationship this query may already hold (from MATCH) got new properties.
        let mut changed = false;
        let rec = match existing {
            Some(mut e) => {
                if !props.is_empty() {
                    e.props.extend(props);
                    self.store.set_edge_props(from, rel, to, &e.props)?;
                    changed = true;
                }
                e
            }
            None => {
                let e = self.store.create_edge(from, rel, to, &props)?;
                self.state.counters.relationships_created += 1;
                e
            }
        };
        self.state.counters.properties_set += set;
        let rec = Rc::new(rec);
        let key = edge_key(&rec);
        self.state.deleted_edges.remove(&key);
        // `edges` overrides the records rows hold; it stays empty (and unread) until a
        // relationship changes.
        if changed || !self.state.edges.is_empty() {
            self.state.edges.insert(key, rec.clone());
        }
        Ok(rec)
    }

    fn merge(&mut self, m: &MergePlan, row: Row, out: &mut Vec<Row>) -> Result<()> {
        let mut found = Vec::new();
        {
            let cx = self.cx();
            let mut work = row.clone();
            run_steps(&m.matcher.steps, &mut work, &cx, &mut |r: &Row| {
                found.push(r.clone());
                Ok(Flow::Continue)
            })?;
        }
        if found.is_empty() {
            let mut row = row;
            self.create(&m.create, &mut row, true)?;
            for op in &m.on_create {
                self.set(op, &row)?;
            }
            out.push(row);
        } else {
            for r in found {
                for op in &m.on_match {
                    self.set(op, &r)?;
                }
                out.push(r);
            }
        }
        if out.len() > self.state.opts.max_rows {
            return Err(crate::exec::too_many_rows(self.state.opts.max_rows));
        }
        Ok(())
    }

    // ---- SET / REMOVE ----

    fn set(&mut self, op: &SetOp, row: &Row) -> Result<()> {
        match op {
            SetOp::Prop { target, key, value } => {
                let (t, v) = (self.eval(target, row)?, self.eval(value, row)?);
                self.update_props(&t, "SET", |props, id| {
                    if key == "id" {
                        return check_id(id, &v).map(|()| 0);
                    }
                    Ok(if v.is_null() {
                        u64::from(props.remove(key).is_some())
                    } else {
                        props.insert(key.clone(), storable(&v)?);
                        1
                    })
                })
            }
            SetOp::RemoveProp { target, key } => {
                let t = self.eval(target, row)?;
                self.update_props(&t, "REMOVE", |props, id| {
                    if key == "id" && id.is_some() {
                        return Err(CypherError::runtime("a node's id cannot be removed"));
                    }
                    Ok(u64::from(props.remove(key).is_some()))
                })
            }
            SetOp::Replace { target, value } | SetOp::Merge { target, value } => {
                let replace = matches!(op, SetOp::Replace { .. });
                let t = self.eval(target, row)?;
                let new = match self.eval(value, row)? {
                    Value::Map(m) => m,
                    Value::Null if replace => Default::default(),
                    Value::Null => return Ok(()),
                    v @ (Value::Node(_) | Value::Rel(_)) => {
                        let cx = self.cx();
                        match crate::functions::call(
                            crate::functions::Func::Properties,
                            vec![v],
                            &Env::new(row, &cx),
                        )? {
                            Value::Map(m) => m,
                            _ => Default::default(),
                        }
                    }
                    other => {
                        return Err(CypherError::runtime(format!(
                            "SET {} needs a map, not {}",
                            if replace { "=" } else { "+=" },
                            other.type_name()
                        )));
                    }
                };
                self.update_props(&t, "SET", |props, id| {
                    let mut count = 0;
                    if replace {
                        count += props.len() as u64;
                        props.clear();
                    }
                    for (k, v) in &new {
                        if k == "id" && id.is_some() {
                            check_id(id, v)?;
                            continue;
                        }
                        if v.is_null() {
                            count += u64::from(props.remove(k).is_some());
                        } else {
                            props.insert(k.clone(), storable(v)?);
                            count += 1;
                        }
                    }
                    Ok(count)
                })
            }
            SetOp::Label { target, label } | SetOp::RemoveLabel { target, label } => {
                let adding = matches!(op, SetOp::Label { .. });
                let n = match self.eval(target, row)? {
                    Value::Null => return Ok(()),
                    Value::Node(n) => n,
                    other => {
                        return Err(CypherError::runtime(format!(
                            "labels belong to nodes, not {}",
                            other.type_name()
                        )));
                    }
                };
                let rec = self.node_record(&n)?;
                let new = if adding {
                    Some(label.clone())
                } else if rec.label.as_deref() == Some(label) {
                    None
                } else {
                    return Ok(());
                };
                if rec.label == new {
                    return Ok(());
                }
                self.store.set_node_label(&n.id, new.as_deref())?;
                if adding {
                    self.state.counters.labels_added += 1;
                    self.state.counters.labels_removed += u64::from(rec.label.is_some());
                } else {
                    self.state.counters.labels_removed += 1;
                }
                let mut updated = (*rec).clone();
                updated.label = new;
                self.state.nodes.insert(n.id.clone(), Rc::new(updated));
                Ok(())
            }
        }
    }

    /// Changes the properties of the node or relationship `target` with `f`, which gets the
    /// properties and (for nodes) the node id, and returns how many properties it set.
    fn update_props(
        &mut self,
        target: &Value,
        clause: &str,
        f: impl FnOnce(&mut Map<String, Json>, Option<&str>) -> Result<u64>,
    ) -> Result<()> {
        match target {
            Value::Null => Ok(()),
            Value::Node(n) => {
                let rec = self.node_record(n)?;
                let mut updated = (*rec).clone();
                let count = f(&mut updated.props, Some(&n.id))?;
                if updated.props != rec.props {
                    self.store.set_node_props(&n.id, &updated.props)?;
                }
                self.state.counters.properties_set += count;
                self.state.nodes.insert(n.id.clone(), Rc::new(updated));
                Ok(())
            }
            Value::Rel(r) => {
                let key = edge_key(r);
                if self.state.deleted_edges.contains(&key) {
                    return Err(CypherError::runtime(
                        "the relationship was deleted earlier in this query",
                    ));
                }
                let cur = self.cx().edge(r);
                let mut updated = (*cur).clone();
                let count = f(&mut updated.props, None)?;
                if updated.props != cur.props {
                    self.store
                        .set_edge_props(&r.from, &r.rel, &r.to, &updated.props)?;
                }
                self.state.counters.properties_set += count;
                self.state.edges.insert(key, Rc::new(updated));
                Ok(())
            }
            other => Err(CypherError::runtime(format!(
                "{clause} needs a node or relationship, not {}",
                other.type_name()
            ))),
        }
    }

    // ---- DELETE ----

    fn delete(&mut self, exprs: &[CExpr], detach: bool, rows: &[Row]) -> Result<()> {
        let mut nodes: Vec<Rc<NodeHandle>> = Vec::new();
        let mut edges: Vec<Rc<EdgeRecord>> = Vec::new();
        for row in rows {
            for e in exprs {
                let v = self.eval(e, row)?;
                collect_deletes(v, &mut nodes, &mut edges)?;
            }
        }
        // Relationships first, so `MATCH (n)-[r]-() DELETE n, r` works.
        for e in edges {
            self.delete_edge(&e)?;
        }
        for n in nodes {
            if self.state.deleted_nodes.contains(&n.id) {
                continue;
            }
            let Some(rec) = self.cx().node(&n)? else {
                continue;
            };
            let mut attached: Vec<EdgeRecord> = Vec::new();
            for e in self.store.edges(&n.id, Dir::Both, &[])? {
                if !attached.iter().any(|a| a.same_edge(&e)) {
                    attached.push(e);
                }
            }
            if !attached.is_empty() && !detach {
                return Err(CypherError::runtime(format!(
                    "cannot delete node {:?} because it still has {} relationship{}; use DETACH \
                     DELETE to delete them too",
                    n.id,
                    attached.len(),
                    if attached.len() == 1 { "" } else { "s" }
                )));
            }
            for e in attached {
                self.delete_edge(&e)?;
            }
            self.store.delete_node(&n.id)?;
            self.state.counters.nodes_deleted += 1;
            self.state.deleted_nodes.insert(n.id.clone());
            self.state.nodes.insert(n.id.clone(), rec);
        }
        Ok(())
    }

    fn delete_edge(&mut self, e: &EdgeRecord) -> Result<()> {
        let key = edge_key(e);
        if self.state.deleted_edges.contains(&key) {
            return Ok(());
        }
        if self.store.delete_edge(&e.from, &e.rel, &e.to)? {
            self.state.counters.relationships_deleted += 1;
        }
        self.state.deleted_edges.insert(key);
        Ok(())
    }
}

fn check_id(id: Option<&str>, v: &Value) -> Result<()> {
    match (id, v) {
        (Some(id), Value::Str(s)) if s == id => Ok(()),
        (Some(id), _) => Err(CypherError::runtime(format!(
            "node {id:?}: a node's id cannot be changed; give it when creating the node, \
             as in CREATE (n {{id: 'my-id'}})"
        ))),
        (None, _) => Ok(()),
    }
}

fn collect_deletes(
    v: Value,
    nodes: &mut Vec<Rc<NodeHandle>>,
    edges: &mut Vec<Rc<EdgeRecord>>,
) -> Result<()> {
    match v {
        Value::Null => {}
        Value::Node(n) => nodes.push(n),
        Value::Rel(r) => edges.push(r),
        Value::Path(p) => {
            edges.extend(p.rels.iter().cloned());
            nodes.extend(p.nodes.iter().cloned());
        }
        Value::List(items) => {
            for item in items {
                collect_deletes(item, nodes, edges)?;
            }
        }
        other => {
            return Err(CypherError::runtime(format!(
                "DELETE needs nodes, relationships or paths, not {}",
                other.type_name()
            )));
        }
    }
    Ok(())
}

/// A created path from the pattern's slots.
fn path_of(elems: &[PathElem], row: &Row) -> Value {
    let mut nodes = Vec::new();
    let mut rels = Vec::new();
    for elem in elems {
        match (elem, elem_value(elem, row)) {
            (PathElem::Node(_), Value::Node(n)) => nodes.push(n.clone()),
            (PathElem::Rel(_), Value::Rel(r)) => rels.push(r.clone()),
            _ => return Value::Null,
        }
    }
    Value::Path(Rc::new(PathValue { nodes, rels }))
}

fn elem_value<'r>(elem: &PathElem, row: &'r Row) -> &'r Value {
    match elem {
        PathElem::Node(s) | PathElem::Rel(s) | PathElem::Rels(s) => &row[*s],
    }
}
