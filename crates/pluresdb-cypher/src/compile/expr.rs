//! Compiling expressions: variables to slots, parameters inlined, functions looked up,
//! aggregates collected.

use super::{Aggs, Compiler, Var, VarKind};
use crate::aggregate::AggSpec;
use crate::ast::*;
use crate::error::Result;
use crate::expr::{BinOp, CExpr};
use crate::functions::{Lookup, lookup};
use crate::value::Value;

impl Compiler<'_> {
    // ---- expressions ----

    /// Compiles an expression. The arms call out to small functions so that each level of a
    /// deeply nested expression takes little stack.
    pub(super) fn expr(&mut self, e: &Expr, aggs: &mut Aggs<'_>) -> Result<CExpr> {
        match &e.kind {
            ExprKind::Null => Ok(CExpr::Lit(Value::Null)),
            ExprKind::Bool(v) => Ok(CExpr::Lit(Value::Bool(*v))),
            ExprKind::Int(i) => Ok(CExpr::Lit(Value::Int(*i))),
            ExprKind::Float(f) => Ok(CExpr::Lit(Value::Float(*f))),
            ExprKind::Str(s) => Ok(CExpr::Lit(Value::Str(s.clone()))),
            ExprKind::Param(name) => self.param(e, name),
            ExprKind::Var(name) => self.var(e, name),
            ExprKind::List(items) => self.list(items, aggs),
            ExprKind::Map(entries) => self.map(entries, aggs),
            ExprKind::Property(target, key) => {
                self.unary_expr(target, aggs, |t| CExpr::Prop(Box::new(t), key.clone()))
            }
            ExprKind::Index(target, index) => self.index(target, index, aggs),
            ExprKind::Slice(target, from, to) => {
                self.slice(target, from.as_deref(), to.as_deref(), aggs)
            }
            ExprKind::HasLabels(target, labels) => self.unary_expr(target, aggs, |t| {
                CExpr::HasLabels(Box::new(t), labels.clone())
            }),
            ExprKind::Unary(op, inner) => self.unary_expr(inner, aggs, |x| match op {
                UnaryOp::Not => CExpr::Not(Box::new(x)),
                UnaryOp::Neg => CExpr::Neg(Box::new(x)),
                UnaryOp::Plus => x,
            }),
            ExprKind::Binary(op, l, r) => self.binary(e, *op, l, r, aggs),
            ExprKind::IsNull(inner, negated) => {
                self.unary_expr(inner, aggs, |x| CExpr::IsNull(Box::new(x), *negated))
            }
            ExprKind::CountStar => {
                self.aggregate(e, crate::functions::AggFunc::Count, false, None, aggs)
            }
            ExprKind::Call {
                name,
                distinct,
                args,
            } => self.call(e, name, *distinct, args, aggs),
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            } => self.case(operand.as_deref(), whens, otherwise.as_deref(), aggs),
            ExprKind::ListComprehension {
                var,
                list,
                predicate,
                map,
            } => self.comprehension(var, list, predicate.as_deref(), map.as_deref(), aggs),
        }
    }

    #[inline(never)]
    pub(super) fn param(&self, e: &Expr, name: &str) -> Result<CExpr> {
        match self.params.get(name) {
            Some(v) => {
                if let Some(n) = unsigned_beyond_i64(v) {
                    return Err(self.err(
                        e.span,
                        format!(
                            "parameter ${name} holds the integer {n}, beyond Cypher's 64-bit \
                             signed integers (largest {}); pass it as a string, or as a float \
                             if rounding is acceptable",
                            i64::MAX
                        ),
                    ));
                }
                Ok(CExpr::Lit(Value::from_json(v)))
            }
            None => Err(self.err(e.span, format!("missing parameter ${name}"))),
        }
    }

    #[inline(never)]
    pub(super) fn var(&self, e: &Expr, name: &str) -> Result<CExpr> {
        match self.lookup_var(name) {
            Some(v) => Ok(CExpr::Slot(v.slot)),
            None => Err(self.err(e.span, format!("variable `{name}` is not defined"))),
        }
    }

    #[inline(never)]
    pub(super) fn list(&mut self, items: &[Expr], aggs: &mut Aggs<'_>) -> Result<CExpr> {
        let items = items
            .iter()
            .map(|i| self.expr(i, aggs))
            .collect::<Result<_>>()?;
        Ok(CExpr::List(items))
    }

    #[inline(never)]
    pub(super) fn map(&mut self, entries: &[(String, Expr)], aggs: &mut Aggs<'_>) -> Result<CExpr> {
        let entries = entries
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.expr(v, aggs)?)))
            .collect::<Result<_>>()?;
        Ok(CExpr::Map(entries))
    }

    #[inline(never)]
    pub(super) fn unary_expr(
        &mut self,
        inner: &Expr,
        aggs: &mut Aggs<'_>,
        wrap: impl FnOnce(CExpr) -> CExpr,
    ) -> Result<CExpr> {
        Ok(wrap(self.expr(inner, aggs)?))
    }

    #[inline(never)]
    pub(super) fn index(
        &mut self,
        target: &Expr,
        index: &Expr,
        aggs: &mut Aggs<'_>,
    ) -> Result<CExpr> {
        let target = self.expr(target, aggs)?;
        let index = self.expr(index, aggs)?;
        Ok(CExpr::Index(Box::new(target), Box::new(index)))
    }

    #[inline(never)]
    pub(super) fn slice(
        &mut self,
        target: &Expr,
        from: Option<&Expr>,
        to: Option<&Expr>,
        aggs: &mut Aggs<'_>,
    ) -> Result<CExpr> {
        let target = self.expr(target, aggs)?;
        let from = from.map(|f| self.expr(f, aggs)).transpose()?;
        let to = to.map(|t| self.expr(t, aggs)).transpose()?;
        Ok(CExpr::Slice(
            Box::new(target),
            from.map(Box::new),
            to.map(Box::new),
        ))
    }

    #[inline(never)]
    pub(super) fn binary(
        &mut self,
        e: &Expr,
        op: BinaryOp,
        l: &Expr,
        r: &Expr,
        aggs: &mut Aggs<'_>,
    ) -> Result<CExpr> {
        if op == BinaryOp::RegexMatch {
            return Err(self.err(
                e.span,
                "regular expressions (=~) are not supported; use STARTS WITH, ENDS WITH \
                 or CONTAINS",
            ));
        }
        let l = Box::new(self.expr(l, aggs)?);
        let r = Box::new(self.expr(r, aggs)?);
        Ok(match op {
            BinaryOp::And => CExpr::And(l, r),
            BinaryOp::Or => CExpr::Or(l, r),
            BinaryOp::Xor => CExpr::Xor(l, r),
            other => CExpr::Bin(bin_op(other), l, r),
        })
    }

    #[inline(never)]
    pub(super) fn case(
        &mut self,
        operand: Option<&Expr>,
        whens: &[(Expr, Expr)],
        otherwise: Option<&Expr>,
        aggs: &mut Aggs<'_>,
    ) -> Result<CExpr> {
        let operand = operand.map(|o| self.expr(o, aggs)).transpose()?;
        let whens = whens
            .iter()
            .map(|(w, t)| Ok((self.expr(w, aggs)?, self.expr(t, aggs)?)))
            .collect::<Result<_>>()?;
        let otherwise = otherwise.map(|o| self.expr(o, aggs)).transpose()?;
        Ok(CExpr::Case {
            operand: operand.map(Box::new),
            whens,
            otherwise: otherwise.map(Box::new),
        })
    }

    #[inline(never)]
    pub(super) fn comprehension(
        &mut self,
        var: &Ident,
        list: &Expr,
        predicate: Option<&Expr>,
        map: Option<&Expr>,
        aggs: &mut Aggs<'_>,
    ) -> Result<CExpr> {
        let list = self.expr(list, aggs)?;
        let slot = self.new_slot();
        self.scope.push(Var {
            name: var.name.clone(),
            slot,
            kind: VarKind::Any,
        });
        let mut inner = Aggs::Forbidden("a list comprehension");
        let predicate = predicate.map(|p| self.expr(p, &mut inner)).transpose();
        let map = map.map(|m| self.expr(m, &mut inner)).transpose();
        self.scope.pop();
        Ok(CExpr::Comprehension {
            slot,
            list: Box::new(list),
            predicate: predicate?.map(Box::new),
            map: map?.map(Box::new),
        })
    }

    pub(super) fn call(
        &mut self,
        e: &Expr,
        name: &str,
        distinct: bool,
        args: &[Expr],
        aggs: &mut Aggs<'_>,
    ) -> Result<CExpr> {
        match lookup(name) {
            Lookup::Aggregate(func) => {
                if args.len() != 1 {
                    return Err(self.err(
                        e.span,
                        format!("{name}() takes one argument but got {}", args.len()),
                    ));
                }
                self.aggregate(e, func, distinct, Some(&args[0]), aggs)
            }
            Lookup::Scalar(func, min, max) => {
                if distinct {
                    return Err(self.err(
                        e.span,
                        format!("DISTINCT is only allowed in aggregate functions, not {name}()"),
                    ));
                }
                if args.len() < min || args.len() > max {
                    let want = if min == max {
                        format!("{min}")
                    } else if max == usize::MAX {
                        format!("at least {min}")
                    } else {
                        format!("{min} to {max}")
                    };
                    return Err(self.err(
                        e.span,
                        format!(
                            "{name}() takes {want} argument{} but got {}",
                            if want == "1" { "" } else { "s" },
                            args.len()
                        ),
                    ));
                }
                let args = args
                    .iter()
                    .map(|a| self.expr(a, aggs))
                    .collect::<Result<Vec<_>>>()?;
                Ok(CExpr::Call(func, args))
            }
            Lookup::Unknown if name.eq_ignore_ascii_case("exists") && args.len() == 1 => {
                let inner = self.expr(&args[0], aggs)?;
                Ok(CExpr::IsNull(Box::new(inner), true))
            }
            Lookup::Unknown => Err(self.err(e.span, format!("unknown function `{name}`"))),
        }
    }

    pub(super) fn aggregate(
        &mut self,
        e: &Expr,
        func: crate::functions::AggFunc,
        distinct: bool,
        arg: Option<&Expr>,
        aggs: &mut Aggs<'_>,
    ) -> Result<CExpr> {
        let list = match aggs {
            Aggs::Forbidden(place) => {
                return Err(self.err(
                    e.span,
                    format!("aggregate functions like count() are not allowed in {place}"),
                ));
            }
            Aggs::Allowed(list) => list,
        };
        let outer = self
            .agg_scope
            .take()
            .map(|s| std::mem::replace(&mut self.scope, s));
        let arg = match arg {
            Some(a) => self
                .expr(a, &mut Aggs::Forbidden("another aggregate's argument"))
                .map(Some),
            None => Ok(None),
        };
        if let Some(outer) = outer {
            self.agg_scope = Some(std::mem::replace(&mut self.scope, outer));
        }
        let arg = arg?;
        list.push(AggSpec {
            func,
            distinct,
            arg,
        });
        Ok(CExpr::Agg(list.len() - 1))
    }
}

pub(super) fn contains_agg(e: &CExpr) -> bool {
    let mut found = false;
    pub(super) fn walk(e: &CExpr, found: &mut bool) {
        match e {
            CExpr::Agg(_) => *found = true,
            CExpr::Prop(x, _)
            | CExpr::HasLabels(x, _)
            | CExpr::Not(x)
            | CExpr::Neg(x)
            | CExpr::IsNull(x, _) => walk(x, found),
            CExpr::Index(a, c)
            | CExpr::And(a, c)
            | CExpr::Or(a, c)
            | CExpr::Xor(a, c)
            | CExpr::Bin(_, a, c) => {
                walk(a, found);
                walk(c, found);
            }
            CExpr::Slice(a, x, y) => {
                walk(a, found);
                x.iter().chain(y).for_each(|e| walk(e, found));
            }
            CExpr::List(items) | CExpr::Call(_, items) => items.iter().for_each(|e| walk(e, found)),
            CExpr::Map(entries) => entries.iter().for_each(|(_, e)| walk(e, found)),
            CExpr::Case {
                operand,
                whens,
                otherwise,
            } => {
                operand.iter().chain(otherwise).for_each(|e| walk(e, found));
                whens.iter().for_each(|(w, t)| {
                    walk(w, found);
                    walk(t, found);
                });
            }
            CExpr::Comprehension {
                list,
                predicate,
                map,
                ..
            } => {
                walk(list, found);
                predicate.iter().chain(map).for_each(|e| walk(e, found));
            }
            CExpr::Lit(_) | CExpr::Slot(_) => {}
        }
    }
    walk(e, &mut found);
    found
}

fn bin_op(op: BinaryOp) -> BinOp {
    match op {
        BinaryOp::Eq => BinOp::Eq,
        BinaryOp::Ne => BinOp::Ne,
        BinaryOp::Lt => BinOp::Lt,
        BinaryOp::Gt => BinOp::Gt,
        BinaryOp::Le => BinOp::Le,
        BinaryOp::Ge => BinOp::Ge,
        BinaryOp::Add => BinOp::Add,
        BinaryOp::Sub => BinOp::Sub,
        BinaryOp::Mul => BinOp::Mul,
        BinaryOp::Div => BinOp::Div,
        BinaryOp::Mod => BinOp::Mod,
        BinaryOp::Pow => BinOp::Pow,
        BinaryOp::StartsWith => BinOp::StartsWith,
        BinaryOp::EndsWith => BinOp::EndsWith,
        BinaryOp::Contains => BinOp::Contains,
        BinaryOp::In => BinOp::In,
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor | BinaryOp::RegexMatch => {
            unreachable!("handled by the caller")
        }
    }
}

/// The first integer in `v` (at any depth) that is above `i64::MAX`: JSON can carry it, a
/// Cypher integer cannot, and turning it into a float would round it silently.
fn unsigned_beyond_i64(v: &serde_json::Value) -> Option<u64> {
    use serde_json::Value as Json;
    match v {
        Json::Number(n) if !n.is_i64() => n.as_u64(),
        Json::Array(items) => items.iter().find_map(unsigned_beyond_i64),
        Json::Object(map) => map.values().find_map(unsigned_beyond_i64),
        _ => None,
    }
}
