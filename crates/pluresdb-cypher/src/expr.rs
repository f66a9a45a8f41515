//! Compiled expressions (variables resolved to row slots, parameters inlined, functions
//! looked up) and their evaluation with Cypher's null semantics.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::error::{CypherError, Result};
use crate::functions::{Func, call};
use crate::store::{EdgeRecord, NodeRecord};
use crate::value::{NodeHandle, Value};

/// Binary operators that evaluate both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    StartsWith,
    EndsWith,
    Contains,
    In,
}

/// A compiled expression.
#[derive(Clone, Debug)]
pub(crate) enum CExpr {
    Lit(Value),
    Slot(usize),
    /// The value of aggregate number `i` of the projection being computed.
    Agg(usize),
    Prop(Box<CExpr>, String),
    Index(Box<CExpr>, Box<CExpr>),
    Slice(Box<CExpr>, Option<Box<CExpr>>, Option<Box<CExpr>>),
    List(Vec<CExpr>),
    Map(Vec<(String, CExpr)>),
    HasLabels(Box<CExpr>, Vec<String>),
    Not(Box<CExpr>),
    Neg(Box<CExpr>),
    And(Box<CExpr>, Box<CExpr>),
    Or(Box<CExpr>, Box<CExpr>),
    Xor(Box<CExpr>, Box<CExpr>),
    Bin(BinOp, Box<CExpr>, Box<CExpr>),
    IsNull(Box<CExpr>, bool),
    Call(Func, Vec<CExpr>),
    Case {
        operand: Option<Box<CExpr>>,
        whens: Vec<(CExpr, CExpr)>,
        otherwise: Option<Box<CExpr>>,
    },
    Comprehension {
        slot: usize,
        list: Box<CExpr>,
        predicate: Option<Box<CExpr>>,
        map: Option<Box<CExpr>>,
    },
}

impl CExpr {
    /// Calls `f` on every row slot the expression reads.
    pub fn visit_slots(&self, f: &mut dyn FnMut(usize)) {
        use CExpr::*;
        match self {
            Lit(_) | Agg(_) => {}
            Slot(s) => f(*s),
            Prop(e, _) | HasLabels(e, _) | Not(e) | Neg(e) | IsNull(e, _) => e.visit_slots(f),
            Index(a, b) | And(a, b) | Or(a, b) | Xor(a, b) | Bin(_, a, b) => {
                a.visit_slots(f);
                b.visit_slots(f);
            }
            Slice(a, b, c) => {
                a.visit_slots(f);
                b.iter().chain(c).for_each(|e| e.visit_slots(f));
            }
            List(items) | Call(_, items) => items.iter().for_each(|e| e.visit_slots(f)),
            Map(entries) => entries.iter().for_each(|(_, e)| e.visit_slots(f)),
            Case {
                operand,
                whens,
                otherwise,
            } => {
                operand
                    .iter()
                    .chain(otherwise)
                    .for_each(|e| e.visit_slots(f));
                for (w, t) in whens {
                    w.visit_slots(f);
                    t.visit_slots(f);
                }
            }
            Comprehension {
                slot,
                list,
                predicate,
                map,
            } => {
                list.visit_slots(f);
                let mut inner = |s: usize| {
                    if s != *slot {
                        f(s)
                    }
                };
                predicate
                    .iter()
                    .chain(map)
                    .for_each(|e| e.visit_slots(&mut inner));
            }
        }
    }

    /// The slots read, sorted and deduplicated.
    pub fn slots(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.visit_slots(&mut |s| out.push(s));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// True when the expression reads no row slot and no aggregate (a constant).
    pub fn is_constant(&self) -> bool {
        fn has_agg(e: &CExpr) -> bool {
            match e {
                CExpr::Agg(_) => true,
                CExpr::Call(_, args) | CExpr::List(args) => args.iter().any(has_agg),
                _ => false,
            }
        }
        self.slots().is_empty() && !has_agg(self)
    }
}

/// What evaluation needs from the executor: current node and edge records.
pub(crate) trait Resolver {
    /// The node's current record (`None` when it does not exist).
    fn node(&self, node: &NodeHandle) -> Result<Option<Rc<NodeRecord>>>;
    /// The edge's current version (it may have been changed by `SET` in this query).
    fn edge(&self, edge: &Rc<EdgeRecord>) -> Rc<EdgeRecord>;
    /// The most elements a list built by a function or comprehension may have.
    fn max_list(&self) -> usize;
}

/// The environment of an evaluation.
pub(crate) struct Env<'a> {
    pub row: &'a [Value],
    pub aggs: &'a [Value],
    pub res: &'a dyn Resolver,
}

impl<'a> Env<'a> {
    pub fn new(row: &'a [Value], res: &'a dyn Resolver) -> Env<'a> {
        Env {
            row,
            aggs: &[],
            res,
        }
    }
}

/// `WHERE`'s reading of a value: true passes, false and null do not, anything else is an error.
pub(crate) fn truthy(v: &Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Null => Ok(false),
        other => Err(CypherError::runtime(format!(
            "expected a boolean predicate but got {}",
            other.type_name()
        ))),
    }
}

fn as_tri(v: Value, op: &str) -> Result<Option<bool>> {
    match v {
        Value::Bool(b) => Ok(Some(b)),
        Value::Null => Ok(None),
        other => Err(CypherError::runtime(format!(
            "{op} expects booleans but got {}",
            other.type_name()
        ))),
    }
}

fn tri(v: Option<bool>) -> Value {
    v.map_or(Value::Null, Value::Bool)
}

/// Evaluates `e`. The arms call out to small functions so that each level of a deeply nested
/// expression takes little stack.
pub(crate) fn eval(e: &CExpr, env: &Env<'_>) -> Result<Value> {
    match e {
        CExpr::Lit(v) => Ok(v.clone()),
        CExpr::Slot(s) => Ok(env.row[*s].clone()),
        CExpr::Agg(i) => Ok(env.aggs[*i].clone()),
        CExpr::Prop(target, key) => eval_prop(target, key, env),
        CExpr::Index(target, index) => eval_index(target, index, env),
        CExpr::Slice(target, from, to) => eval_slice(target, from.as_deref(), to.as_deref(), env),
        CExpr::List(items) => eval_list(items, env),
        CExpr::Map(entries) => eval_map(entries, env),
        CExpr::HasLabels(target, labels) => eval_labels(target, labels, env),
        CExpr::Not(inner) => eval_not(inner, env),
        CExpr::Neg(inner) => eval_neg(inner, env),
        CExpr::And(a, b) => eval_and(a, b, env),
        CExpr::Or(a, b) => eval_or(a, b, env),
        CExpr::Xor(a, b) => eval_xor(a, b, env),
        CExpr::Bin(op, a, b) => eval_bin(*op, a, b, env),
        CExpr::IsNull(inner, negated) => Ok(Value::Bool(eval(inner, env)?.is_null() != *negated)),
        CExpr::Call(func, args) => eval_call(*func, args, env),
        CExpr::Case {
            operand,
            whens,
            otherwise,
        } => eval_case(operand.as_deref(), whens, otherwise.as_deref(), env),
        CExpr::Comprehension {
            slot,
            list,
            predicate,
            map,
        } => eval_comprehension(*slot, list, predicate.as_deref(), map.as_deref(), env),
    }
}

#[inline(never)]
fn eval_prop(target: &CExpr, key: &str, env: &Env<'_>) -> Result<Value> {
    property(&eval(target, env)?, key, env)
}

#[inline(never)]
fn eval_index(target: &CExpr, index: &CExpr, env: &Env<'_>) -> Result<Value> {
    let (t, i) = (eval(target, env)?, eval(index, env)?);
    index_value(&t, &i, env)
}

#[inline(never)]
fn eval_slice(
    target: &CExpr,
    from: Option<&CExpr>,
    to: Option<&CExpr>,
    env: &Env<'_>,
) -> Result<Value> {
    let t = eval(target, env)?;
    let from = from.map(|f| eval(f, env)).transpose()?;
    let to = to.map(|f| eval(f, env)).transpose()?;
    slice(t, from, to)
}

#[inline(never)]
fn eval_list(items: &[CExpr], env: &Env<'_>) -> Result<Value> {
    Ok(Value::List(
        items
            .iter()
            .map(|i| eval(i, env))
            .collect::<Result<Vec<_>>>()?,
    ))
}

#[inline(never)]
fn eval_map(entries: &[(String, CExpr)], env: &Env<'_>) -> Result<Value> {
    Ok(Value::Map(
        entries
            .iter()
            .map(|(k, v)| Ok((k.clone(), eval(v, env)?)))
            .collect::<Result<BTreeMap<_, _>>>()?,
    ))
}

#[inline(never)]
fn eval_labels(target: &CExpr, labels: &[String], env: &Env<'_>) -> Result<Value> {
    match eval(target, env)? {
        Value::Null => Ok(Value::Null),
        Value::Node(n) => {
            let rec = env.res.node(&n)?;
            let label = rec.as_ref().and_then(|r| r.label.as_deref());
            Ok(Value::Bool(
                labels.iter().all(|l| Some(l.as_str()) == label),
            ))
        }
        other => Err(CypherError::runtime(format!(
            "a label test needs a node but got {}",
            other.type_name()
        ))),
    }
}

#[inline(never)]
fn eval_not(inner: &CExpr, env: &Env<'_>) -> Result<Value> {
    Ok(tri(as_tri(eval(inner, env)?, "NOT")?.map(|b| !b)))
}

#[inline(never)]
fn eval_neg(inner: &CExpr, env: &Env<'_>) -> Result<Value> {
    match eval(inner, env)? {
        Value::Null => Ok(Value::Null),
        Value::Int(i) => {
            Ok(Value::Int(i.checked_neg().ok_or_else(|| {
                CypherError::runtime("integer overflow in negation")
            })?))
        }
        Value::Float(f) => Ok(Value::Float(-f)),
        other => Err(CypherError::runtime(format!(
            "cannot negate {}",
            other.type_name()
        ))),
    }
}

#[inline(never)]
fn eval_and(a: &CExpr, b: &CExpr, env: &Env<'_>) -> Result<Value> {
    let left = as_tri(eval(a, env)?, "AND")?;
    if left == Some(false) {
        return Ok(Value::Bool(false));
    }
    let right = as_tri(eval(b, env)?, "AND")?;
    Ok(tri(match (left, right) {
        (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }))
}

#[inline(never)]
fn eval_or(a: &CExpr, b: &CExpr, env: &Env<'_>) -> Result<Value> {
    let left = as_tri(eval(a, env)?, "OR")?;
    if left == Some(true) {
        return Ok(Value::Bool(true));
    }
    let right = as_tri(eval(b, env)?, "OR")?;
    Ok(tri(match (left, right) {
        (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }))
}

#[inline(never)]
fn eval_xor(a: &CExpr, b: &CExpr, env: &Env<'_>) -> Result<Value> {
    let left = as_tri(eval(a, env)?, "XOR")?;
    let right = as_tri(eval(b, env)?, "XOR")?;
    Ok(tri(left.zip(right).map(|(x, y)| x != y)))
}

#[inline(never)]
fn eval_bin(op: BinOp, a: &CExpr, b: &CExpr, env: &Env<'_>) -> Result<Value> {
    let left = eval(a, env)?;
    let right = eval(b, env)?;
    binary(op, left, right)
}

#[inline(never)]
fn eval_call(func: Func, args: &[CExpr], env: &Env<'_>) -> Result<Value> {
    let args = args
        .iter()
        .map(|a| eval(a, env))
        .collect::<Result<Vec<_>>>()?;
    call(func, args, env)
}

#[inline(never)]
fn eval_case(
    operand: Option<&CExpr>,
    whens: &[(CExpr, CExpr)],
    otherwise: Option<&CExpr>,
    env: &Env<'_>,
) -> Result<Value> {
    let operand = operand.map(|o| eval(o, env)).transpose()?;
    for (when, then) in whens {
        let w = eval(when, env)?;
        let hit = match &operand {
            Some(o) => o.equals(&w) == Some(true),
            None => matches!(w, Value::Bool(true)),
        };
        if hit {
            return eval(then, env);
        }
    }
    match otherwise {
        Some(e) => eval(e, env),
        None => Ok(Value::Null),
    }
}

#[inline(never)]
fn eval_comprehension(
    slot: usize,
    list: &CExpr,
    predicate: Option<&CExpr>,
    map: Option<&CExpr>,
    env: &Env<'_>,
) -> Result<Value> {
    let items = match eval(list, env)? {
        Value::Null => return Ok(Value::Null),
        Value::List(items) => items,
        other => {
            return Err(CypherError::runtime(format!(
                "a list comprehension needs a list but got {}",
                other.type_name()
            )));
        }
    };
    let mut row = env.row.to_vec();
    let mut out = Vec::with_capacity(items.len());
    let max = env.res.max_list();
    let mut held = 0usize;
    for item in items {
        row[slot] = item;
        let inner = Env {
            row: &row,
            aggs: env.aggs,
            res: env.res,
        };
        if let Some(p) = predicate
            && !truthy(&eval(p, &inner)?)?
        {
            continue;
        }
        let value = match map {
            Some(m) => eval(m, &inner)?,
            None => row[slot].clone(),
        };
        held = held.saturating_add(value.weight());
        if held > max {
            return Err(CypherError::limit(format!(
                "a list comprehension would hold more than {max} values (each element of a \
                 nested list counts); filter or shorten its list, or raise ExecOptions::max_rows"
            )));
        }
        out.push(value);
    }
    Ok(Value::List(out))
}

/// `target.key`.
pub(crate) fn property(target: &Value, key: &str, env: &Env<'_>) -> Result<Value> {
    Ok(match target {
        Value::Null => Value::Null,
        Value::Node(n) => {
            if key == "id" {
                return Ok(Value::Str(n.id.clone()));
            }
            match env.res.node(n)? {
                Some(rec) => rec.props.get(key).map_or(Value::Null, Value::from_json),
                None => Value::Null,
            }
        }
        Value::Rel(r) => env
            .res
            .edge(r)
            .props
            .get(key)
            .map_or(Value::Null, Value::from_json),
        Value::Map(m) => m.get(key).cloned().unwrap_or(Value::Null),
        other => {
            return Err(CypherError::runtime(format!(
                "cannot read property `{key}` of {}",
                other.type_name()
            )));
        }
    })
}

fn index_value(target: &Value, index: &Value, env: &Env<'_>) -> Result<Value> {
    Ok(match (target, index) {
        (Value::Null, _) | (_, Value::Null) => Value::Null,
        (Value::List(items), Value::Int(i)) => {
            let len = items.len() as i64;
            let i = if *i < 0 { len + i } else { *i };
            if (0..len).contains(&i) {
                items[i as usize].clone()
            } else {
                Value::Null
            }
        }
        (Value::Map(_) | Value::Node(_) | Value::Rel(_), Value::Str(key)) => {
            property(target, key, env)?
        }
        (t, i) => {
            return Err(CypherError::runtime(format!(
                "cannot index {} with {}",
                t.type_name(),
                i.type_name()
            )));
        }
    })
}

fn slice(target: Value, from: Option<Value>, to: Option<Value>) -> Result<Value> {
    let Value::List(items) = target else {
        return match target {
            Value::Null => Ok(Value::Null),
            other => Err(CypherError::runtime(format!(
                "cannot slice {}",
                other.type_name()
            ))),
        };
    };
    let len = items.len() as i64;
    let bound = |v: Option<Value>, default: i64| -> Result<Option<i64>> {
        match v {
            None => Ok(Some(default)),
            Some(Value::Null) => Ok(None),
            Some(Value::Int(i)) => Ok(Some(if i < 0 { (len + i).max(0) } else { i.min(len) })),
            Some(other) => Err(CypherError::runtime(format!(
                "a slice bound must be an integer, not {}",
                other.type_name()
            ))),
        }
    };
    let (Some(from), Some(to)) = (bound(from, 0)?, bound(to, len)?) else {
        return Ok(Value::Null);
    };
    if from >= to {
        return Ok(Value::List(Vec::new()));
    }
    Ok(Value::List(items[from as usize..to as usize].to_vec()))
}

/// `x op y` does not fit in an i64.
fn overflow(x: i64, op: &str, y: i64) -> CypherError {
    CypherError::runtime(format!(
        "integer overflow: {x} {op} {y} is beyond the 64-bit integer range; \
         apply toFloat() to an operand for float arithmetic"
    ))
}

fn type_error(op: &str, a: &Value, b: &Value) -> CypherError {
    CypherError::runtime(format!(
        "cannot apply {op} to {} and {}",
        a.type_name(),
        b.type_name()
    ))
}

/// A binary operator on two evaluated operands.
pub(crate) fn binary(op: BinOp, a: Value, b: Value) -> Result<Value> {
    use Value::*;
    Ok(match op {
        BinOp::Eq => tri(a.equals(&b)),
        BinOp::Ne => tri(a.equals(&b).map(|x| !x)),
        BinOp::Lt => tri(a.compare(&b).map(|o| o.is_lt())),
        BinOp::Gt => tri(a.compare(&b).map(|o| o.is_gt())),
        BinOp::Le => tri(a.compare(&b).map(|o| o.is_le())),
        BinOp::Ge => tri(a.compare(&b).map(|o| o.is_ge())),
        BinOp::StartsWith | BinOp::EndsWith | BinOp::Contains => match (&a, &b) {
            (Str(s), Str(t)) => Bool(match op {
                BinOp::StartsWith => s.starts_with(t.as_str()),
                BinOp::EndsWith => s.ends_with(t.as_str()),
                _ => s.contains(t.as_str()),
            }),
            _ => Null,
        },
        BinOp::In => match b {
            Null => Null,
            List(items) => {
                let mut unknown = false;
                for item in &items {
                    match a.equals(item) {
                        Some(true) => return Ok(Bool(true)),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                if unknown { Null } else { Bool(false) }
            }
            other => {
                return Err(CypherError::runtime(format!(
                    "IN needs a list on the right but got {}",
                    other.type_name()
                )));
            }
        },
        BinOp::Add => match (a, b) {
            (Null, _) | (_, Null) => Null,
            (Int(x), Int(y)) => Int(x.checked_add(y).ok_or_else(|| overflow(x, "+", y))?),
            (Int(x), Float(y)) => Float(x as f64 + y),
            (Float(x), Int(y)) => Float(x + y as f64),
            (Float(x), Float(y)) => Float(x + y),
            (Str(x), Str(y)) => Str(x + &y),
            (Str(x), y @ (Int(_) | Float(_) | Bool(_))) => Str(x + &scalar_text(&y)),
            (x @ (Int(_) | Float(_) | Bool(_)), Str(y)) => Str(scalar_text(&x) + &y),
            (List(mut x), List(y)) => {
                x.extend(y);
                List(x)
            }
            (List(mut x), y) => {
                x.push(y);
                List(x)
            }
            (x, List(mut y)) => {
                y.insert(0, x);
                List(y)
            }
            (x, y) => return Err(type_error("+", &x, &y)),
        },
        BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod | BinOp::Pow => arith(op, a, b)?,
    })
}

fn arith(op: BinOp, a: Value, b: Value) -> Result<Value> {
    use Value::*;
    let name = match op {
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Mod => "%",
        _ => "^",
    };
    Ok(match (a, b) {
        (Null, _) | (_, Null) => Null,
        (Int(x), Int(y)) => match op {
            BinOp::Sub => Int(x.checked_sub(y).ok_or_else(|| overflow(x, name, y))?),
            BinOp::Mul => Int(x.checked_mul(y).ok_or_else(|| overflow(x, name, y))?),
            BinOp::Div | BinOp::Mod if y == 0 => {
                return Err(CypherError::runtime("division by zero"));
            }
            BinOp::Div => Int(x.checked_div(y).ok_or_else(|| overflow(x, name, y))?),
            // Only i64::MIN % -1 wraps, and its remainder is 0.
            BinOp::Mod => Int(x.wrapping_rem(y)),
            _ => Float((x as f64).powf(y as f64)),
        },
        (x @ (Int(_) | Float(_)), y @ (Int(_) | Float(_))) => {
            let (x, y) = (x.num(), y.num());
            Float(match op {
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                BinOp::Mod => x % y,
                _ => x.powf(y),
            })
        }
        (x, y) => return Err(type_error(name, &x, &y)),
    })
}

impl Value {
    fn num(&self) -> f64 {
        match self {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            _ => f64::NAN,
        }
    }
}

/// How `toString` and string concatenation print a scalar.
pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => {
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                format!("{f:.1}")
            } else {
                f.to_string()
            }
        }
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => s.clone(),
        _ => String::new(),
    }
}
