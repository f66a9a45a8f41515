//! Compiles the syntax tree into a [`Plan`]: checks variables and functions (semantic errors
//! point at the offending text), inlines parameters, and plans each `MATCH`.

mod expr;
mod pattern;
mod project;

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use crate::ExecOptions;
use crate::aggregate::AggSpec;
use crate::ast::*;
use crate::error::{CypherError, ErrorKind, Result};
use crate::expr::{CExpr, Resolver};
use crate::plan::*;
use crate::value::NodeHandle;

/// What kind of value a variable holds, as far as the compiler knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarKind {
    Node,
    Rel,
    RelList,
    Path,
    Any,
}

#[derive(Clone, Debug)]
struct Var {
    name: String,
    slot: usize,
    kind: VarKind,
}

/// The deepest nesting of lists and maps a parameter may have (what parsing JSON text
/// allows); values are converted recursively, so a deeper one built in code would overflow
/// the stack.
const MAX_PARAM_DEPTH: usize = 128;

/// Fails for a parameter nested deeper than [`MAX_PARAM_DEPTH`].
fn check_param_depth(params: &Map<String, Json>) -> Result<()> {
    for (name, value) in params {
        let mut open = vec![(value, 1)];
        while let Some((v, depth)) = open.pop() {
            let (items, map) = match v {
                Json::Array(items) => (items.as_slice(), None),
                Json::Object(map) => (&[][..], Some(map)),
                _ => continue,
            };
            if depth > MAX_PARAM_DEPTH {
                return Err(CypherError::runtime(format!(
                    "parameter ${name} nests lists and maps more than {MAX_PARAM_DEPTH} levels \
                     deep; flatten it"
                )));
            }
            let inner = items.iter().chain(map.into_iter().flat_map(Map::values));
            open.extend(inner.map(|c| (c, depth + 1)));
        }
    }
    Ok(())
}

/// Compiles a statement.
pub(crate) fn compile(
    src: &str,
    st: &Statement,
    params: &Map<String, Json>,
    opts: &ExecOptions,
) -> Result<Plan> {
    check_param_depth(params)?;
    let mut parts = Vec::new();
    for part in &st.parts {
        let mut c = Compiler {
            src,
            params,
            opts,
            width: 0,
            scope: Vec::new(),
            agg_scope: None,
        };
        parts.push(c.single(part)?);
    }
    for part in &parts[1..] {
        if part.columns != parts[0].columns {
            return Err(CypherError::semantic(format!(
                "all parts of a UNION must return the same columns; got {:?} and {:?}",
                parts[0].columns, part.columns
            )));
        }
    }
    Ok(Plan {
        parts,
        union_all: st.union_all.clone(),
    })
}

/// Where aggregate functions may appear.
enum Aggs<'a> {
    Forbidden(&'static str),
    Allowed(&'a mut Vec<AggSpec>),
}

struct Compiler<'a> {
    src: &'a str,
    params: &'a Map<String, Json>,
    opts: &'a ExecOptions,
    width: usize,
    scope: Vec<Var>,
    /// While compiling ORDER BY of an aggregating projection: the scope aggregate arguments
    /// see (the variables before the projection).
    agg_scope: Option<Vec<Var>>,
}

/// A resolver for constant expressions (no nodes involved), with the list limit.
struct NoData(usize);

impl Resolver for NoData {
    fn node(&self, _: &NodeHandle) -> Result<Option<std::rc::Rc<crate::store::NodeRecord>>> {
        Ok(None)
    }
    fn edge(
        &self,
        edge: &std::rc::Rc<crate::store::EdgeRecord>,
    ) -> std::rc::Rc<crate::store::EdgeRecord> {
        edge.clone()
    }
    fn max_list(&self) -> usize {
        self.0
    }
}

impl Compiler<'_> {
    fn err(&self, span: Span, message: impl std::fmt::Display) -> CypherError {
        CypherError::at(ErrorKind::Semantic, message, self.src, span.start)
    }

    fn new_slot(&mut self) -> usize {
        self.width += 1;
        self.width - 1
    }

    fn lookup_var(&self, name: &str) -> Option<&Var> {
        self.scope.iter().rev().find(|v| v.name == name)
    }

    fn declare(&mut self, name: &str, kind: VarKind) -> usize {
        let slot = self.new_slot();
        self.scope.push(Var {
            name: name.to_owned(),
            slot,
            kind,
        });
        slot
    }

    /// A slot for an anonymous pattern element (not visible by name).
    fn hidden(&mut self) -> usize {
        self.new_slot()
    }

    fn single(&mut self, q: &SingleQuery) -> Result<PartPlan> {
        let mut ops = Vec::new();
        let mut columns = Vec::new();
        let last = q.clauses.len() - 1;
        for (i, clause) in q.clauses.iter().enumerate() {
            match clause {
                Clause::Match(m) => {
                    let plan = self.match_clause(&m.patterns, m.where_.as_ref(), m.optional)?;
                    ops.push(OpPlan::Match(plan));
                }
                Clause::Unwind { expr, alias } => {
                    let expr = self.expr(expr, &mut Aggs::Forbidden("UNWIND"))?;
                    let slot = self.declare(&alias.name, VarKind::Any);
                    ops.push(OpPlan::Unwind { expr, slot });
                }
                Clause::With(p) => {
                    let (plan, _, where_) = self.projection(p, false)?;
                    ops.push(OpPlan::Project(plan));
                    if let Some(w) = where_ {
                        ops.push(OpPlan::Filter(w));
                    }
                }
                Clause::Return(p) => {
                    if i != last {
                        return Err(self.err(
                            p.span,
                            "RETURN must be the last clause; use WITH to continue the query",
                        ));
                    }
                    let (plan, cols, _) = self.projection(p, true)?;
                    let slots = plan.items.iter().map(|(s, ..)| *s).collect();
                    ops.push(OpPlan::Project(plan));
                    ops.push(OpPlan::Return { slots });
                    columns = cols;
                }
                Clause::Create { patterns, .. } => {
                    let mut out = Vec::new();
                    for p in patterns {
                        out.push(self.create_pattern(p, &HashSet::new(), false)?);
                    }
                    ops.push(OpPlan::Create(out));
                }
                Clause::Merge(m) => ops.push(OpPlan::Merge(self.merge(m)?)),
                Clause::Set(items) => {
                    let mut out = Vec::new();
                    for item in items {
                        out.push(self.set_item(item)?);
                    }
                    ops.push(OpPlan::Set(out));
                }
                Clause::Remove(items) => {
                    let mut out = Vec::new();
                    for item in items {
                        out.push(self.remove_item(item)?);
                    }
                    ops.push(OpPlan::Set(out));
                }
                Clause::Delete { detach, exprs } => {
                    let exprs = exprs
                        .iter()
                        .map(|e| self.expr(e, &mut Aggs::Forbidden("DELETE")))
                        .collect::<Result<_>>()?;
                    ops.push(OpPlan::Delete {
                        exprs,
                        detach: *detach,
                    });
                }
            }
        }
        let ends_ok =
            matches!(q.clauses[last], Clause::Return(_)) || ops.last().is_some_and(OpPlan::writes);
        if !ends_ok {
            return Err(CypherError::at(
                ErrorKind::Semantic,
                "a query must end with RETURN or with an update clause (CREATE, MERGE, SET, \
                 REMOVE, DELETE)",
                self.src,
                self.src.trim_end().len(),
            ));
        }
        Ok(PartPlan {
            width: self.width,
            ops,
            columns,
        })
    }

    // ---- SET / REMOVE ----

    fn var_expr(&self, var: &Ident) -> Result<CExpr> {
        match self.lookup_var(&var.name) {
            Some(v) => Ok(CExpr::Slot(v.slot)),
            None => Err(self.undefined(var)),
        }
    }

    fn undefined(&self, var: &Ident) -> CypherError {
        self.err(var.span, format!("variable `{}` is not defined", var.name))
    }

    fn one_label(&self, labels: &[Ident]) -> Result<String> {
        Ok(self
            .single_label(labels)?
            .expect("the parser requires a label"))
    }

    fn set_item(&mut self, item: &SetItem) -> Result<SetOp> {
        let mut aggs = Aggs::Forbidden("SET");
        Ok(match item {
            SetItem::Property { target, key, value } => SetOp::Prop {
                target: self.expr(target, &mut aggs)?,
                key: key.name.clone(),
                value: self.expr(value, &mut aggs)?,
            },
            SetItem::Replace { var, value } => SetOp::Replace {
                target: self.var_expr(var)?,
                value: self.expr(value, &mut aggs)?,
            },
            SetItem::Merge { var, value } => SetOp::Merge {
                target: self.var_expr(var)?,
                value: self.expr(value, &mut aggs)?,
            },
            SetItem::Label { var, labels } => SetOp::Label {
                target: self.var_expr(var)?,
                label: self.one_label(labels)?,
            },
        })
    }

    fn remove_item(&mut self, item: &RemoveItem) -> Result<SetOp> {
        Ok(match item {
            RemoveItem::Property { target, key } => SetOp::RemoveProp {
                target: self.expr(target, &mut Aggs::Forbidden("REMOVE"))?,
                key: key.name.clone(),
            },
            RemoveItem::Label { var, labels } => SetOp::RemoveLabel {
                target: self.var_expr(var)?,
                label: self.one_label(labels)?,
            },
        })
    }
}

fn kind_name(kind: VarKind) -> &'static str {
    match kind {
        VarKind::Node => "a node",
        VarKind::Rel => "a relationship",
        VarKind::RelList => "a list of relationships",
        VarKind::Path => "a path",
        VarKind::Any => "a value",
    }
}
