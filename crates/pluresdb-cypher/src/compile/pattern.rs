//! Compiling patterns: `MATCH` (into planned steps), `CREATE` and `MERGE`.

use std::collections::HashSet;

use super::{Aggs, Compiler, NoData, VarKind, kind_name};
use crate::ast::*;
use crate::error::{CypherError, ErrorKind, Result};
use crate::expr::{BinOp, CExpr, Env, eval};
use crate::matchplan::{PatternGraph, PatternNode, PatternRel, Pred, plan_match};
use crate::plan::*;
use crate::value::Value;

impl Compiler<'_> {
    // ---- patterns ----

    /// The slot of a node pattern's variable, declaring it when new.
    pub(super) fn node_var(&mut self, np: &NodePattern) -> Result<(usize, bool)> {
        let Some(var) = &np.var else {
            return Ok((self.hidden(), false));
        };
        if let Some(v) = self.lookup_var(&var.name) {
            return match v.kind {
                VarKind::Node | VarKind::Any => Ok((v.slot, true)),
                other => Err(self.err(
                    var.span,
                    format!(
                        "variable `{}` is {}, not a node",
                        var.name,
                        kind_name(other)
                    ),
                )),
            };
        }
        Ok((self.declare(&var.name, VarKind::Node), false))
    }

    pub(super) fn single_label(&self, labels: &[Ident]) -> Result<Option<String>> {
        match labels {
            [] => Ok(None),
            [one] => Ok(Some(one.name.clone())),
            [_, second, ..] => Err(self.err(
                second.span,
                "PluresDB nodes have one label (their type); a pattern can name only one",
            )),
        }
    }

    /// Pattern properties as `(key, expression)` pairs.
    pub(super) fn pattern_props(&mut self, props: &Expr) -> Result<Vec<(String, CExpr)>> {
        match &props.kind {
            ExprKind::Map(entries) => entries
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.expr(v, &mut Aggs::Forbidden("a pattern"))?)))
                .collect(),
            _ => {
                let value = self.expr(props, &mut Aggs::Forbidden("a pattern"))?;
                match self.constant(&value)? {
                    Some(Value::Map(m)) => {
                        Ok(m.into_iter().map(|(k, v)| (k, CExpr::Lit(v))).collect())
                    }
                    _ => Err(self.err(props.span, "pattern properties must be a map")),
                }
            }
        }
    }

    pub(super) fn constant(&self, e: &CExpr) -> Result<Option<Value>> {
        if e.is_constant() {
            Ok(Some(eval(e, &Env::new(&[], &NoData(self.opts.max_rows)))?))
        } else {
            Ok(None)
        }
    }

    pub(super) fn match_clause(
        &mut self,
        patterns: &[PathPattern],
        where_: Option<&Expr>,
        optional: bool,
    ) -> Result<MatchPlan> {
        let bound: HashSet<usize> = self.scope.iter().map(|v| v.slot).collect();
        let first_new_slot = self.width;
        let mut graph = PatternGraph::default();
        let mut clause_rels: Vec<String> = Vec::new();
        let mut prop_todo: Vec<(usize, bool, &Expr)> = Vec::new();
        let mut paths = Vec::new();
        for pattern in patterns {
            let mut elems = Vec::new();
            let (mut left, _) = self.node_var(&pattern.start)?;
            let was_bound = bound.contains(&left);
            self.note_node(&mut graph, left, was_bound, &pattern.start, &mut prop_todo)?;
            elems.push(PathElem::Node(left));
            for (rp, np) in &pattern.steps {
                let (right, _) = self.node_var(np)?;
                let was_bound = bound.contains(&right);
                let (rel_slot, rel_bound) = self.rel_var(rp, &mut clause_rels)?;
                let range = match rp.length {
                    None => None,
                    Some(r) => Some(self.range(r, rp.span)?),
                };
                if rel_bound && range.is_some() {
                    return Err(self.err(
                        rp.span,
                        "a variable-length relationship cannot reuse a bound variable",
                    ));
                }
                graph.rels.push(PatternRel {
                    slot: rel_slot,
                    left,
                    right,
                    direction: rp.direction,
                    types: rp.types.iter().map(|t| t.name.clone()).collect(),
                    range,
                    props: Vec::new(),
                    bound: rel_bound,
                    named: rp.var.is_some(),
                });
                if let Some(props) = &rp.props {
                    prop_todo.push((graph.rels.len() - 1, true, props));
                }
                elems.push(if range.is_some() {
                    PathElem::Rels(rel_slot)
                } else {
                    PathElem::Rel(rel_slot)
                });
                self.note_node(&mut graph, right, was_bound, np, &mut prop_todo)?;
                elems.push(PathElem::Node(right));
                left = right;
            }
            if let Some(p) = &pattern.var {
                if self.lookup_var(&p.name).is_some() {
                    return Err(
                        self.err(p.span, format!("variable `{}` is already declared", p.name))
                    );
                }
                let slot = self.declare(&p.name, VarKind::Path);
                paths.push((slot, elems));
            }
        }
        // Properties and WHERE see every variable of the clause.
        for (index, is_rel, props) in prop_todo {
            let pairs = self.pattern_props(props)?;
            if is_rel {
                let rel = &graph.rels[index];
                let rel_slot = rel.slot;
                let is_var = rel.range.is_some();
                for (key, value) in pairs {
                    let local = value.slots().iter().any(|s| !bound.contains(s));
                    if !local {
                        graph.rels[index].props.push((key, value));
                    } else if is_var {
                        return Err(self.err(
                            props.span,
                            "properties of a variable-length relationship may only use \
                             parameters, literals and variables of earlier clauses",
                        ));
                    } else {
                        let expr = CExpr::Bin(
                            BinOp::Eq,
                            Box::new(CExpr::Prop(Box::new(CExpr::Slot(rel_slot)), key)),
                            Box::new(value),
                        );
                        graph.preds.push(Pred::new(expr));
                    }
                }
            } else {
                for (key, value) in pairs {
                    let expr = CExpr::Bin(
                        BinOp::Eq,
                        Box::new(CExpr::Prop(Box::new(CExpr::Slot(index)), key)),
                        Box::new(value),
                    );
                    graph.preds.push(Pred::new(expr));
                }
            }
        }
        if let Some(w) = where_ {
            let cond = self.expr(w, &mut Aggs::Forbidden("WHERE"))?;
            let mut conjuncts = Vec::new();
            split_and(cond, &mut conjuncts);
            graph.preds.extend(conjuncts.into_iter().map(Pred::new));
        }
        graph.paths = paths;
        let new_slots = (first_new_slot..self.width).collect();
        plan_match(graph, &bound)
            .map(|steps| MatchPlan {
                optional,
                steps,
                new_slots,
            })
            .map_err(|msg| self.err(patterns[0].span, msg))
    }

    /// Records a node occurrence: its slot, and a label predicate / not-null check.
    pub(super) fn note_node<'e>(
        &mut self,
        graph: &mut PatternGraph,
        slot: usize,
        was_bound: bool,
        np: &'e NodePattern,
        prop_todo: &mut Vec<(usize, bool, &'e Expr)>,
    ) -> Result<()> {
        if !graph.nodes.iter().any(|n| n.slot == slot) {
            graph.nodes.push(PatternNode { slot });
            if was_bound {
                graph
                    .preds
                    .push(Pred::new(CExpr::IsNull(Box::new(CExpr::Slot(slot)), true)));
            }
        }
        if let Some(label) = self.single_label(&np.labels)? {
            graph.preds.push(Pred::new(CExpr::HasLabels(
                Box::new(CExpr::Slot(slot)),
                vec![label],
            )));
        }
        if let Some(props) = &np.props {
            prop_todo.push((slot, false, props));
        }
        Ok(())
    }

    pub(super) fn rel_var(
        &mut self,
        rp: &RelPattern,
        clause_rels: &mut Vec<String>,
    ) -> Result<(usize, bool)> {
        let kind = if rp.length.is_some() {
            VarKind::RelList
        } else {
            VarKind::Rel
        };
        let Some(var) = &rp.var else {
            return Ok((self.hidden(), false));
        };
        if clause_rels.contains(&var.name) {
            return Err(self.err(
                var.span,
                format!(
                    "relationship variable `{}` is used for more than one relationship",
                    var.name
                ),
            ));
        }
        clause_rels.push(var.name.clone());
        if let Some(v) = self.lookup_var(&var.name) {
            return match v.kind {
                VarKind::Rel | VarKind::Any if rp.length.is_none() => Ok((v.slot, true)),
                other => Err(self.err(
                    var.span,
                    format!(
                        "variable `{}` is {}, not a relationship",
                        var.name,
                        kind_name(other)
                    ),
                )),
            };
        }
        Ok((self.declare(&var.name, kind), false))
    }

    pub(super) fn range(&self, r: LengthRange, span: Span) -> Result<(u64, u64)> {
        let min = r.min.unwrap_or(1);
        let max = match r.max {
            Some(max) => max,
            None => {
                let depth = u64::from(self.opts.max_depth);
                if min > depth {
                    return Err(CypherError::at(
                        ErrorKind::Limit,
                        format!(
                            "the minimum length {min} is above the maximum depth {depth} used \
                             for unbounded patterns (ExecOptions::max_depth); give an upper bound"
                        ),
                        self.src,
                        span.start,
                    ));
                }
                depth
            }
        };
        Ok((min, max))
    }

    // ---- CREATE / MERGE ----

    /// Compiles a pattern to create. `matched` holds the slots a preceding MERGE match bound
    /// (treated as new nodes to create); `merge` applies MERGE's rules.
    pub(super) fn create_pattern(
        &mut self,
        p: &PathPattern,
        matched: &HashSet<usize>,
        merge: bool,
    ) -> Result<CreatePattern> {
        let mut elems = Vec::new();
        let mut path = Vec::new();
        let mut left = self.create_node(&p.start, matched, &mut elems)?;
        path.push(PathElem::Node(left));
        for (rp, np) in &p.steps {
            let right = self.create_node(np, matched, &mut elems)?;
            if rp.length.is_some() {
                return Err(self.err(
                    rp.span,
                    "CREATE and MERGE cannot use a variable-length relationship",
                ));
            }
            let rel = match rp.types.as_slice() {
                [one] => one.name.clone(),
                _ => {
                    return Err(self.err(
                        rp.span,
                        "a relationship to create needs exactly one type, like -[:KNOWS]->",
                    ));
                }
            };
            let (from, to) = match rp.direction {
                RelDirection::Right => (left, right),
                RelDirection::Left => (right, left),
                RelDirection::Both if merge => (left, right),
                RelDirection::Both => {
                    return Err(self.err(
                        rp.span,
                        "a relationship to create needs a direction: use -> or <-",
                    ));
                }
            };
            let props = match &rp.props {
                Some(e) => Some(self.expr(e, &mut Aggs::Forbidden("CREATE"))?),
                None => None,
            };
            let slot = match &rp.var {
                Some(v) => match self.lookup_var(&v.name) {
                    Some(var) if !matched.contains(&var.slot) => {
                        return Err(
                            self.err(v.span, format!("variable `{}` is already declared", v.name))
                        );
                    }
                    Some(var) => var.slot,
                    None => self.declare(&v.name, VarKind::Rel),
                },
                None => self.hidden(),
            };
            elems.push(CreateElem::Rel {
                slot,
                from,
                to,
                rel,
                props,
            });
            path.push(PathElem::Rel(slot));
            path.push(PathElem::Node(right));
            left = right;
        }
        let path = match &p.var {
            Some(v) => {
                let slot = match self.lookup_var(&v.name) {
                    Some(var) if matched.contains(&var.slot) => var.slot,
                    Some(_) => {
                        return Err(
                            self.err(v.span, format!("variable `{}` is already declared", v.name))
                        );
                    }
                    None => self.declare(&v.name, VarKind::Path),
                };
                Some((slot, path))
            }
            None => None,
        };
        Ok(CreatePattern { elems, path })
    }

    pub(super) fn create_node(
        &mut self,
        np: &NodePattern,
        matched: &HashSet<usize>,
        elems: &mut Vec<CreateElem>,
    ) -> Result<usize> {
        let existing = np
            .var
            .as_ref()
            .and_then(|v| self.lookup_var(&v.name).map(|var| (var.slot, var.kind)));
        if let Some((slot, kind)) = existing {
            let var = np.var.as_ref().expect("named");
            let created_here = elems
                .iter()
                .any(|e| matches!(e, CreateElem::Node { slot: s, spec: Some(_) } if *s == slot));
            if matched.contains(&slot) && !created_here {
                // MERGE: a node the match half would have bound; create it here.
            } else {
                if !matches!(kind, VarKind::Node | VarKind::Any) {
                    return Err(self.err(
                        var.span,
                        format!("variable `{}` is {}, not a node", var.name, kind_name(kind)),
                    ));
                }
                if !np.labels.is_empty() || np.props.is_some() {
                    return Err(self.err(
                        var.span,
                        format!(
                            "variable `{}` is already bound, so labels or properties cannot be \
                             given here; use SET to change it",
                            var.name
                        ),
                    ));
                }
                if !created_here {
                    elems.push(CreateElem::Node { slot, spec: None });
                }
                return Ok(slot);
            }
            let spec = self.node_spec(np)?;
            elems.push(CreateElem::Node {
                slot,
                spec: Some(spec),
            });
            return Ok(slot);
        }
        let spec = self.node_spec(np)?;
        let slot = match &np.var {
            Some(v) => self.declare(&v.name, VarKind::Node),
            None => self.hidden(),
        };
        elems.push(CreateElem::Node {
            slot,
            spec: Some(spec),
        });
        Ok(slot)
    }

    pub(super) fn node_spec(&mut self, np: &NodePattern) -> Result<NodeSpec> {
        let label = self.single_label(&np.labels)?;
        let props = match &np.props {
            Some(e) => Some(self.expr(e, &mut Aggs::Forbidden("CREATE"))?),
            None => None,
        };
        Ok(NodeSpec { label, props })
    }

    pub(super) fn merge(&mut self, m: &Merge) -> Result<MergePlan> {
        let p = &m.pattern;
        if p.steps.is_empty()
            && let Some(v) = &p.start.var
            && self.lookup_var(&v.name).is_some()
        {
            return Err(self.err(
                v.span,
                format!(
                    "variable `{}` is already bound; MERGE needs a new node or a relationship",
                    v.name
                ),
            ));
        }
        let before: HashSet<usize> = self.scope.iter().map(|v| v.slot).collect();
        let matcher = self.match_clause(std::slice::from_ref(p), None, false)?;
        let matched: HashSet<usize> = self
            .scope
            .iter()
            .map(|v| v.slot)
            .filter(|s| !before.contains(s))
            .collect();
        let create = self.create_pattern(p, &matched, true)?;
        let on_create = m
            .on_create
            .iter()
            .map(|i| self.set_item(i))
            .collect::<Result<_>>()?;
        let on_match = m
            .on_match
            .iter()
            .map(|i| self.set_item(i))
            .collect::<Result<_>>()?;
        Ok(MergePlan {
            matcher,
            create,
            on_create,
            on_match,
        })
    }
}

/// Splits top-level ANDs into conjuncts.
fn split_and(e: CExpr, out: &mut Vec<CExpr>) {
    match e {
        CExpr::And(a, b) => {
            split_and(*a, out);
            split_and(*b, out);
        }
        other => out.push(other),
    }
}
