//! Compiling `WITH` and `RETURN`: items, aliases, aggregation, `ORDER BY`, `SKIP`, `LIMIT`.

use super::expr::contains_agg;
use super::{Aggs, Compiler, Var, VarKind};
use crate::ast::*;
use crate::error::Result;
use crate::expr::CExpr;
use crate::plan::ProjectPlan;
use crate::value::Value;

/// One column of a projection while it is compiled.
struct Column<'e> {
    name: String,
    /// The item's expression (none for the columns of `*`).
    source: Option<&'e Expr>,
    expr: CExpr,
    has_agg: bool,
    kind: VarKind,
    span: Span,
}

impl Compiler<'_> {
    // ---- WITH / RETURN ----

    /// Compiles a projection; returns the plan, the column names and WITH's WHERE.
    pub(super) fn projection(
        &mut self,
        p: &Projection,
        is_return: bool,
    ) -> Result<(ProjectPlan, Vec<String>, Option<CExpr>)> {
        let clause = if is_return { "RETURN" } else { "WITH" };
        // (name, source expression, compiled, has aggregate, kind)
        let mut entries: Vec<Column<'_>> = Vec::new();
        let mut aggs = Vec::new();
        if p.star {
            let mut visible: Vec<Var> = Vec::new();
            for v in self.scope.iter().rev() {
                if !visible.iter().any(|w| w.name == v.name) {
                    visible.push(v.clone());
                }
            }
            visible.sort_by(|a, b| a.name.cmp(&b.name));
            if visible.is_empty() && p.items.is_empty() {
                return Err(self.err(
                    p.span,
                    format!("{clause} * needs at least one variable in scope"),
                ));
            }
            for v in visible {
                entries.push(Column {
                    name: v.name,
                    source: None,
                    expr: CExpr::Slot(v.slot),
                    has_agg: false,
                    kind: v.kind,
                    span: p.span,
                });
            }
        }
        for item in &p.items {
            let before = aggs.len();
            let expr = self.expr(&item.expr, &mut Aggs::Allowed(&mut aggs))?;
            let has_agg = aggs.len() > before || contains_agg(&expr);
            let (name, kind) = match (&item.alias, &item.expr.kind) {
                (Some(alias), ExprKind::Var(v)) => (
                    alias.name.clone(),
                    self.lookup_var(v).map_or(VarKind::Any, |x| x.kind),
                ),
                (Some(alias), _) => (alias.name.clone(), VarKind::Any),
                (None, ExprKind::Var(v)) => (
                    v.clone(),
                    self.lookup_var(v).map_or(VarKind::Any, |x| x.kind),
                ),
                (None, _) if is_return => (item.text.clone(), VarKind::Any),
                (None, _) => {
                    return Err(self.err(
                        item.expr.span,
                        format!(
                            "expression `{}` in WITH must be aliased (add AS name)",
                            item.text
                        ),
                    ));
                }
            };
            entries.push(Column {
                name,
                source: Some(&item.expr),
                expr,
                has_agg,
                kind,
                span: item.expr.span,
            });
        }
        for (i, e) in entries.iter().enumerate() {
            if entries[..i].iter().any(|f| f.name == e.name) {
                return Err(self.err(
                    e.span,
                    format!(
                        "column `{}` appears more than once; use AS to rename one",
                        e.name
                    ),
                ));
            }
        }
        let aggregating = entries.iter().any(|e| e.has_agg);
        let old_scope = std::mem::take(&mut self.scope);
        // New variables: one fresh slot per item.
        let mut new_vars = Vec::new();
        let mut items = Vec::new();
        for Column {
            name,
            expr,
            has_agg,
            kind,
            ..
        } in &entries
        {
            let slot = self.new_slot();
            new_vars.push(Var {
                name: name.clone(),
                slot,
                kind: *kind,
            });
            items.push((slot, expr.clone(), *has_agg));
        }
        // ORDER BY sees the old variables too, unless the projection aggregates or is
        // DISTINCT; it always sees the new ones (which shadow old ones).
        self.scope = if aggregating || p.distinct {
            new_vars.clone()
        } else {
            old_scope
                .iter()
                .cloned()
                .chain(new_vars.iter().cloned())
                .collect()
        };
        let mut order = Vec::new();
        if aggregating {
            self.agg_scope = Some(old_scope.clone());
        }
        for s in &p.order {
            let same = entries
                .iter()
                .zip(&new_vars)
                .find(|(c, _)| c.source.is_some_and(|e| *e == s.expr));
            let key = match same {
                Some((_, var)) => CExpr::Slot(var.slot),
                None if aggregating => self.expr(&s.expr, &mut Aggs::Allowed(&mut aggs))?,
                None => self.expr(
                    &s.expr,
                    &mut Aggs::Forbidden("ORDER BY without aggregation in the projection"),
                )?,
            };
            order.push((key, s.descending));
        }
        self.agg_scope = None;
        self.scope = Vec::new();
        let skip = match &p.skip {
            Some(e) => self.count_arg(e, "SKIP")?,
            None => 0,
        };
        let limit = match &p.limit {
            Some(e) => Some(self.count_arg(e, "LIMIT")?),
            None => None,
        };
        self.scope = new_vars;
        let where_ = match &p.where_ {
            Some(w) => Some(self.expr(w, &mut Aggs::Forbidden("WHERE"))?),
            None => None,
        };
        let columns = entries.iter().map(|e| e.name.clone()).collect();
        Ok((
            ProjectPlan {
                items,
                aggs,
                aggregating,
                distinct: p.distinct,
                order,
                skip,
                limit,
            },
            columns,
            where_,
        ))
    }

    pub(super) fn count_arg(&mut self, e: &Expr, what: &str) -> Result<usize> {
        let constant =
            |c: &Compiler<'_>| c.err(e.span, format!("{what} must be a constant or a parameter"));
        let value = self
            .expr(e, &mut Aggs::Forbidden("SKIP/LIMIT"))
            .map_err(|err| {
                if err.message().contains("is not defined") {
                    constant(self)
                } else {
                    err
                }
            })?;
        let value = match self.constant(&value) {
            Ok(Some(v)) => v,
            _ => return Err(constant(self)),
        };
        match value {
            Value::Int(n) if n >= 0 => Ok(n as usize),
            Value::Float(f) if f >= 0.0 && f.fract() == 0.0 => Ok(f as usize),
            other => Err(self.err(
                e.span,
                format!(
                    "{what} must be a non-negative integer, not {}",
                    crate::expr::scalar_text(&other).if_empty(other.type_name())
                ),
            )),
        }
    }
}

trait IfEmpty {
    fn if_empty(self, other: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, other: &str) -> String {
        if self.is_empty() {
            other.to_owned()
        } else {
            self
        }
    }
}
