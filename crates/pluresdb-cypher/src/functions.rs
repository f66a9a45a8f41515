//! Scalar functions (`id`, `type`, `labels`, `size`, `toLower`, `coalesce`, ...) and the
//! names of aggregate functions.

use crate::error::{CypherError, Result};
use crate::expr::{Env, scalar_text};
use crate::value::{NodeHandle, Value};

/// A scalar function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Id,
    Type,
    Labels,
    Keys,
    Properties,
    Size,
    Length,
    Nodes,
    Relationships,
    StartNode,
    EndNode,
    Head,
    Last,
    Tail,
    Reverse,
    Range,
    Coalesce,
    ToLower,
    ToUpper,
    Trim,
    LTrim,
    RTrim,
    Replace,
    Substring,
    Split,
    Left,
    Right,
    ToString,
    ToInteger,
    ToFloat,
    ToBoolean,
    Abs,
    Ceil,
    Floor,
    Round,
    Sqrt,
    Sign,
    Exp,
    Log,
    Log10,
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Collect,
}

/// Scalar functions by lower-case name, with their minimum and maximum argument counts.
const SCALARS: &[(&str, Func, usize, usize)] = &[
    ("id", Func::Id, 1, 1),
    ("elementid", Func::Id, 1, 1),
    ("type", Func::Type, 1, 1),
    ("labels", Func::Labels, 1, 1),
    ("keys", Func::Keys, 1, 1),
    ("properties", Func::Properties, 1, 1),
    ("size", Func::Size, 1, 1),
    ("length", Func::Length, 1, 1),
    ("nodes", Func::Nodes, 1, 1),
    ("relationships", Func::Relationships, 1, 1),
    ("rels", Func::Relationships, 1, 1),
    ("startnode", Func::StartNode, 1, 1),
    ("endnode", Func::EndNode, 1, 1),
    ("head", Func::Head, 1, 1),
    ("last", Func::Last, 1, 1),
    ("tail", Func::Tail, 1, 1),
    ("reverse", Func::Reverse, 1, 1),
    ("range", Func::Range, 2, 3),
    ("coalesce", Func::Coalesce, 1, usize::MAX),
    ("tolower", Func::ToLower, 1, 1),
    ("lower", Func::ToLower, 1, 1),
    ("toupper", Func::ToUpper, 1, 1),
    ("upper", Func::ToUpper, 1, 1),
    ("trim", Func::Trim, 1, 1),
    ("ltrim", Func::LTrim, 1, 1),
    ("rtrim", Func::RTrim, 1, 1),
    ("replace", Func::Replace, 3, 3),
    ("substring", Func::Substring, 2, 3),
    ("split", Func::Split, 2, 2),
    ("left", Func::Left, 2, 2),
    ("right", Func::Right, 2, 2),
    ("tostring", Func::ToString, 1, 1),
    ("tointeger", Func::ToInteger, 1, 1),
    ("toint", Func::ToInteger, 1, 1),
    ("tofloat", Func::ToFloat, 1, 1),
    ("toboolean", Func::ToBoolean, 1, 1),
    ("abs", Func::Abs, 1, 1),
    ("ceil", Func::Ceil, 1, 1),
    ("floor", Func::Floor, 1, 1),
    ("round", Func::Round, 1, 1),
    ("sqrt", Func::Sqrt, 1, 1),
    ("sign", Func::Sign, 1, 1),
    ("exp", Func::Exp, 1, 1),
    ("log", Func::Log, 1, 1),
    ("log10", Func::Log10, 1, 1),
];

/// What a function name refers to.
pub(crate) enum Lookup {
    Scalar(Func, usize, usize),
    Aggregate(AggFunc),
    Unknown,
}

/// Looks a function up by name (case-insensitive).
pub(crate) fn lookup(name: &str) -> Lookup {
    let lower = name.to_ascii_lowercase();
    let agg = match lower.as_str() {
        "count" => Some(AggFunc::Count),
        "sum" => Some(AggFunc::Sum),
        "avg" => Some(AggFunc::Avg),
        "min" => Some(AggFunc::Min),
        "max" => Some(AggFunc::Max),
        "collect" => Some(AggFunc::Collect),
        _ => None,
    };
    if let Some(agg) = agg {
        return Lookup::Aggregate(agg);
    }
    SCALARS
        .iter()
        .find(|(n, ..)| *n == lower)
        .map_or(Lookup::Unknown, |&(_, f, min, max)| {
            Lookup::Scalar(f, min, max)
        })
}

fn wrong(func: &str, v: &Value) -> CypherError {
    CypherError::runtime(format!(
        "{func}() does not accept {} (got {})",
        v.type_name(),
        short(v)
    ))
}

fn short(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        Value::Int(_) | Value::Float(_) | Value::Bool(_) => scalar_text(v),
        other => other.type_name().to_ascii_lowercase(),
    }
}

fn int_arg(func: &str, v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        // Not a saturating cast: 1e300 is no index or count.
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(*f as i64),
        other => Err(wrong(func, other)),
    }
}

fn string_fn(args: &[Value], name: &str, f: impl Fn(&str) -> String) -> Result<Value> {
    match &args[0] {
        Value::Null => Ok(Value::Null),
        Value::Str(s) => Ok(Value::Str(f(s))),
        other => Err(wrong(name, other)),
    }
}

fn float_fn(args: &[Value], name: &str, f: impl Fn(f64) -> f64) -> Result<Value> {
    match &args[0] {
        Value::Null => Ok(Value::Null),
        Value::Int(i) => Ok(Value::Float(f(*i as f64))),
        Value::Float(x) => Ok(Value::Float(f(*x))),
        other => Err(wrong(name, other)),
    }
}

/// Calls scalar function `func` on evaluated arguments.
pub(crate) fn call(func: Func, args: Vec<Value>, env: &Env<'_>) -> Result<Value> {
    use Value::*;
    if func == Func::Coalesce {
        return Ok(args.into_iter().find(|v| !v.is_null()).unwrap_or(Null));
    }
    // Every other function returns null for a null first argument.
    if args[0].is_null() {
        return Ok(Null);
    }
    let first = args[0].clone();
    Ok(match func {
        Func::Id => match first {
            Node(n) => Str(n.id.clone()),
            other => {
                return Err(CypherError::runtime(format!(
                    "id() needs a node but got {}; relationships have no id in PluresDB \
                     (use type(r), startNode(r) and endNode(r))",
                    other.type_name()
                )));
            }
        },
        Func::Type => match first {
            Rel(r) => Str(r.rel.clone()),
            other => return Err(wrong("type", &other)),
        },
        Func::Labels => match first {
            Node(n) => {
                let rec = env.res.node(&n)?;
                List(
                    rec.and_then(|r| r.label.clone())
                        .into_iter()
                        .map(Str)
                        .collect(),
                )
            }
            other => return Err(wrong("labels", &other)),
        },
        Func::Keys | Func::Properties => {
            let map = match first {
                Node(n) => env
                    .res
                    .node(&n)?
                    .map(|r| Value::from_json(&serde_json::Value::Object(r.props.clone())))
                    .unwrap_or(Map(Default::default())),
                Rel(r) => {
                    Value::from_json(&serde_json::Value::Object(env.res.edge(&r).props.clone()))
                }
                m @ Map(_) => m,
                other => {
                    return Err(wrong(
                        if func == Func::Keys {
                            "keys"
                        } else {
                            "properties"
                        },
                        &other,
                    ));
                }
            };
            match (func, map) {
                (Func::Keys, Map(m)) => List(m.into_keys().map(Str).collect()),
                (_, m) => m,
            }
        }
        Func::Size => match first {
            List(items) => Int(items.len() as i64),
            Str(s) => Int(s.chars().count() as i64),
            other => return Err(wrong("size", &other)),
        },
        Func::Length => match first {
            Path(p) => Int(p.rels.len() as i64),
            List(items) => Int(items.len() as i64),
            Str(s) => Int(s.chars().count() as i64),
            other => return Err(wrong("length", &other)),
        },
        Func::Nodes => match first {
            Path(p) => List(p.nodes.iter().map(|n| Node(n.clone())).collect()),
            other => return Err(wrong("nodes", &other)),
        },
        Func::Relationships => match first {
            Path(p) => List(p.rels.iter().map(|r| Rel(r.clone())).collect()),
            other => return Err(wrong("relationships", &other)),
        },
        Func::StartNode | Func::EndNode => match first {
            Rel(r) => {
                let id = if func == Func::StartNode {
                    &r.from
                } else {
                    &r.to
                };
                Node(NodeHandle::new(id.as_str()))
            }
            other => return Err(wrong("startNode/endNode", &other)),
        },
        Func::Head | Func::Last => match first {
            List(items) => {
                let item = if func == Func::Head {
                    items.into_iter().next()
                } else {
                    items.into_iter().last()
                };
                item.unwrap_or(Null)
            }
            other => return Err(wrong("head/last", &other)),
        },
        Func::Tail => match first {
            List(items) => List(items.into_iter().skip(1).collect()),
            other => return Err(wrong("tail", &other)),
        },
        Func::Reverse => match first {
            List(mut items) => {
                items.reverse();
                List(items)
            }
            Str(s) => Str(s.chars().rev().collect()),
            other => return Err(wrong("reverse", &other)),
        },
        Func::Range => {
            let start = int_arg("range", &first)?;
            let end = int_arg("range", &args[1])?;
            let step = match args.get(2) {
                Some(v) => int_arg("range", v)?,
                None => 1,
            };
            if step == 0 {
                return Err(CypherError::runtime("range() step must not be zero"));
            }
            let count = if (step > 0 && end >= start) || (step < 0 && end <= start) {
                ((end as i128 - start as i128) / step as i128 + 1) as u128
            } else {
                0
            };
            if count > env.res.max_list() as u128 {
                return Err(CypherError::limit(format!(
                    "range() would make a list of {count} elements; the limit is {} \
                     (ExecOptions::max_rows)",
                    env.res.max_list()
                )));
            }
            // Every element lies between start and end, but `i * step` alone can
            // overflow i64, so step in i128.
            let (start, step) = (i128::from(start), i128::from(step));
            List(
                (0..count as i128)
                    .map(|i| Int((start + i * step) as i64))
                    .collect(),
            )
        }
        Func::Coalesce => unreachable!("handled above"),
        Func::ToLower => string_fn(&args, "toLower", str::to_lowercase)?,
        Func::ToUpper => string_fn(&args, "toUpper", str::to_uppercase)?,
        Func::Trim => string_fn(&args, "trim", |s| s.trim().to_owned())?,
        Func::LTrim => string_fn(&args, "ltrim", |s| s.trim_start().to_owned())?,
        Func::RTrim => string_fn(&args, "rtrim", |s| s.trim_end().to_owned())?,
        Func::Replace => match (&first, &args[1], &args[2]) {
            (_, Null, _) | (_, _, Null) => Null,
            (Str(s), Str(from), Str(to)) => Str(s.replace(from.as_str(), to)),
            _ => return Err(CypherError::runtime("replace() needs three strings")),
        },
        Func::Substring => {
            let Str(s) = &first else {
                return Err(wrong("substring", &first));
            };
            let start = int_arg("substring", &args[1])?.max(0) as usize;
            let len = match args.get(2) {
                Some(v) => int_arg("substring", v)?.max(0) as usize,
                None => usize::MAX,
            };
            Str(s.chars().skip(start).take(len).collect())
        }
        Func::Split => match (&first, &args[1]) {
            (_, Null) => Null,
            (Str(s), Str(delim)) => {
                List(s.split(delim.as_str()).map(|p| Str(p.to_owned())).collect())
            }
            _ => return Err(CypherError::runtime("split() needs two strings")),
        },
        Func::Left | Func::Right => {
            let Str(s) = &first else {
                return Err(wrong("left/right", &first));
            };
            let n = int_arg("left/right", &args[1])?.max(0) as usize;
            let chars: Vec<char> = s.chars().collect();
            let n = n.min(chars.len());
            Str(if func == Func::Left {
                chars[..n].iter().collect()
            } else {
                chars[chars.len() - n..].iter().collect()
            })
        }
        Func::ToString => match first {
            v @ (Int(_) | Float(_) | Bool(_) | Str(_)) => Str(scalar_text(&v)),
            other => return Err(wrong("toString", &other)),
        },
        Func::ToInteger => match first {
            Int(i) => Int(i),
            Float(f) if f.is_finite() && f.abs() < 9.2e18 => Int(f.trunc() as i64),
            Float(_) => Null,
            Bool(b) => Int(b as i64),
            Str(s) => {
                let t = s.trim();
                t.parse::<i64>()
                    .ok()
                    .or_else(|| {
                        t.parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                            .map(|f| f.trunc() as i64)
                    })
                    .map_or(Null, Int)
            }
            other => return Err(wrong("toInteger", &other)),
        },
        Func::ToFloat => match first {
            Int(i) => Float(i as f64),
            Float(f) => Float(f),
            Str(s) => s.trim().parse::<f64>().map_or(Null, Float),
            other => return Err(wrong("toFloat", &other)),
        },
        Func::ToBoolean => match first {
            Bool(b) => Bool(b),
            Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Bool(true),
                "false" => Bool(false),
                _ => Null,
            },
            Int(i) => Bool(i != 0),
            other => return Err(wrong("toBoolean", &other)),
        },
        Func::Abs => match first {
            Int(i) => Int(i
                .checked_abs()
                .ok_or_else(|| CypherError::runtime("integer overflow"))?),
            Float(f) => Float(f.abs()),
            other => return Err(wrong("abs", &other)),
        },
        Func::Sign => match first {
            Int(i) => Int(i.signum()),
            Float(f) => Int(if f > 0.0 {
                1
            } else if f < 0.0 {
                -1
            } else {
                0
            }),
            other => return Err(wrong("sign", &other)),
        },
        Func::Ceil => float_fn(&args, "ceil", f64::ceil)?,
        Func::Floor => float_fn(&args, "floor", f64::floor)?,
        Func::Round => float_fn(&args, "round", |f| {
            // Cypher rounds half up (towards positive infinity). `fract` is exact,
            // unlike `f + 0.5`, which rounds before the floor.
            if f.fract() == -0.5 {
                f.trunc()
            } else {
                f.round()
            }
        })?,
        Func::Sqrt => float_fn(&args, "sqrt", f64::sqrt)?,
        Func::Exp => float_fn(&args, "exp", f64::exp)?,
        Func::Log => float_fn(&args, "log", f64::ln)?,
        Func::Log10 => float_fn(&args, "log10", f64::log10)?,
    })
}
