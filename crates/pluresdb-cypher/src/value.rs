//! Runtime values: Cypher's types, three-valued equality and comparison, the global sort
//! order and hashable keys for grouping and DISTINCT.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::Value as Json;

use crate::store::{EdgeRecord, NodeRecord};

/// A node: its id, and its record once something needed it.
#[derive(Debug)]
pub(crate) struct NodeHandle {
    pub id: String,
    pub rec: OnceCell<Rc<NodeRecord>>,
}

impl NodeHandle {
    pub fn new(id: impl Into<String>) -> Rc<NodeHandle> {
        Rc::new(NodeHandle {
            id: id.into(),
            rec: OnceCell::new(),
        })
    }

    pub fn loaded(rec: NodeRecord) -> Rc<NodeHandle> {
        let handle = NodeHandle {
            id: rec.id.clone(),
            rec: OnceCell::new(),
        };
        let _ = handle.rec.set(Rc::new(rec));
        Rc::new(handle)
    }
}

/// A path: `nodes.len() == rels.len() + 1`.
#[derive(Debug)]
pub(crate) struct PathValue {
    pub nodes: Vec<Rc<NodeHandle>>,
    pub rels: Vec<Rc<EdgeRecord>>,
}

/// A Cypher value.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Node(Rc<NodeHandle>),
    Rel(Rc<EdgeRecord>),
    Path(Rc<PathValue>),
}

impl Value {
    /// Cypher's name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Bool(_) => "BOOLEAN",
            Value::Int(_) => "INTEGER",
            Value::Float(_) => "FLOAT",
            Value::Str(_) => "STRING",
            Value::List(_) => "LIST",
            Value::Map(_) => "MAP",
            Value::Node(_) => "NODE",
            Value::Rel(_) => "RELATIONSHIP",
            Value::Path(_) => "PATH",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A JSON value as a Cypher value (objects become maps).
    pub fn from_json(json: &Json) -> Value {
        match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::Str(s.clone()),
            Json::Array(items) => Value::List(items.iter().map(Value::from_json).collect()),
            Json::Object(map) => Value::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Cypher `=`: `None` is null (unknown).
    pub fn equals(&self, other: &Value) -> Option<bool> {
        use Value::*;
        match (self, other) {
            (Null, _) | (_, Null) => None,
            (Int(a), Int(b)) => Some(a == b),
            (Int(_) | Float(_), Int(_) | Float(_)) => {
                Some(num_cmp(self, other).is_some_and(Ordering::is_eq))
            }
            (Bool(a), Bool(b)) => Some(a == b),
            (Str(a), Str(b)) => Some(a == b),
            (List(a), List(b)) => {
                if a.len() != b.len() {
                    return Some(false);
                }
                all_equal(a.iter().zip(b))
            }
            (Map(a), Map(b)) => {
                if a.len() != b.len() || a.keys().ne(b.keys()) {
                    return Some(false);
                }
                all_equal(a.values().zip(b.values()))
            }
            (Node(a), Node(b)) => Some(a.id == b.id),
            (Rel(a), Rel(b)) => Some(a.same_edge(b)),
            (Path(a), Path(b)) => Some(
                a.nodes.len() == b.nodes.len()
                    && a.nodes.iter().zip(&b.nodes).all(|(x, y)| x.id == y.id)
                    && a.rels.iter().zip(&b.rels).all(|(x, y)| x.same_edge(y)),
            ),
            _ => Some(false),
        }
    }

    /// Cypher `<` and friends: `None` when either is null or the types are not comparable.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (Int(_) | Float(_), Int(_) | Float(_)) => num_cmp(self, other),
            (Str(a), Str(b)) => Some(a.cmp(b)),
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (List(a), List(b)) => {
                for (x, y) in a.iter().zip(b) {
                    match x.compare(y)? {
                        Ordering::Equal => {}
                        ord => return Some(ord),
                    }
                }
                Some(a.len().cmp(&b.len()))
            }
            _ => None,
        }
    }

    /// The total order of `ORDER BY` (ascending): maps, nodes, relationships, lists, paths,
    /// strings, booleans, numbers, then null last.
    pub fn order(&self, other: &Value) -> Ordering {
        use Value::*;
        let rank = |v: &Value| match v {
            Map(_) => 0,
            Node(_) => 1,
            Rel(_) => 2,
            List(_) => 3,
            Path(_) => 4,
            Str(_) => 5,
            Bool(_) => 6,
            Int(_) | Float(_) => 7,
            Null => 8,
        };
        match (self, other) {
            // NaN sorts after every other number.
            (Int(_) | Float(_), Int(_) | Float(_)) => num_cmp(self, other).unwrap_or_else(|| {
                let nan = |v: &Value| matches!(v, Float(f) if f.is_nan());
                nan(self).cmp(&nan(other))
            }),
            (Str(a), Str(b)) => a.cmp(b),
            (Bool(a), Bool(b)) => a.cmp(b),
            (List(a), List(b)) => lex_order(a.iter(), b.iter()),
            (Map(a), Map(b)) => a
                .iter()
                .zip(b.iter())
                .map(|((ka, va), (kb, vb))| ka.cmp(kb).then_with(|| va.order(vb)))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| a.len().cmp(&b.len())),
            (Node(a), Node(b)) => a.id.cmp(&b.id),
            (Rel(a), Rel(b)) => (&a.from, &a.rel, &a.to).cmp(&(&b.from, &b.rel, &b.to)),
            (Path(a), Path(b)) => a
                .nodes
                .iter()
                .map(|n| &n.id)
                .cmp(b.nodes.iter().map(|n| &n.id)),
            _ => rank(self).cmp(&rank(other)),
        }
    }

    /// What a memory budget charges for this value: 1, plus the weight of each element
    /// of a list or map, so nested lists count all their elements.
    pub(crate) fn weight(&self) -> usize {
        match self {
            Value::List(items) => 1 + items.iter().map(Value::weight).sum::<usize>(),
            Value::Map(map) => 1 + map.values().map(Value::weight).sum::<usize>(),
            _ => 1,
        }
    }

    /// A hashable key with DISTINCT's notion of sameness (null equals null, 1 equals 1.0).
    pub fn key(&self) -> Key {
        match self {
            Value::Null => Key::Null,
            Value::Bool(b) => Key::Bool(*b),
            Value::Int(i) => Key::Int(*i),
            Value::Float(f) => {
                if f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64 {
                    Key::Int(*f as i64)
                } else if f.is_nan() {
                    Key::Float(f64::NAN.to_bits())
                } else {
                    Key::Float(f.to_bits())
                }
            }
            Value::Str(s) => Key::Str(s.clone()),
            Value::List(items) => Key::List(items.iter().map(Value::key).collect()),
            Value::Map(map) => Key::Map(map.iter().map(|(k, v)| (k.clone(), v.key())).collect()),
            Value::Node(n) => Key::Node(n.id.clone()),
            Value::Rel(r) => Key::Rel(r.from.clone(), r.rel.clone(), r.to.clone()),
            Value::Path(p) => Key::List(
                p.nodes
                    .iter()
                    .map(|n| Key::Node(n.id.clone()))
                    .chain(
                        p.rels
                            .iter()
                            .map(|r| Key::Rel(r.from.clone(), r.rel.clone(), r.to.clone())),
                    )
                    .collect(),
            ),
        }
    }
}

/// Compares two numbers exactly (`None` for a non-number or NaN). Converting an
/// integer to f64 instead would round it, and the order would stop being transitive.
fn num_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
        (Value::Int(i), Value::Float(f)) => int_float_cmp(*i, *f),
        (Value::Float(f), Value::Int(i)) => int_float_cmp(*i, *f).map(Ordering::reverse),
        _ => None,
    }
}

fn int_float_cmp(i: i64, f: f64) -> Option<Ordering> {
    // i64::MAX as f64 is 2^63, the first float above every i64.
    if f.is_nan() {
        None
    } else if f >= i64::MAX as f64 {
        Some(Ordering::Less)
    } else if f < i64::MIN as f64 {
        Some(Ordering::Greater)
    } else {
        // The whole part now fits in i64; when i equals it, i sits where it does to f.
        let whole = f.trunc();
        Some(i.cmp(&(whole as i64)).then(whole.partial_cmp(&f)?))
    }
}

fn all_equal<'a>(pairs: impl Iterator<Item = (&'a Value, &'a Value)>) -> Option<bool> {
    let mut unknown = false;
    for (x, y) in pairs {
        match x.equals(y) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown { None } else { Some(true) }
}

fn lex_order<'a>(
    mut a: impl Iterator<Item = &'a Value>,
    mut b: impl Iterator<Item = &'a Value>,
) -> Ordering {
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match x.order(y) {
                Ordering::Equal => {}
                ord => return ord,
            },
        }
    }
}

/// A hashable form of a value for grouping and DISTINCT.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Null,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(String),
    List(Vec<Key>),
    Map(Vec<(String, Key)>),
    Node(String),
    Rel(String, String, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_valued_equality() {
        assert_eq!(Value::Int(1).equals(&Value::Float(1.0)), Some(true));
        assert_eq!(Value::Int(1).equals(&Value::Null), None);
        let a = Value::List(vec![Value::Int(1), Value::Null]);
        let b = Value::List(vec![Value::Int(2), Value::Null]);
        assert_eq!(a.equals(&a.clone()), None);
        assert_eq!(a.equals(&b), Some(false));
        assert_eq!(Value::Str("1".into()).equals(&Value::Int(1)), Some(false));
    }

    #[test]
    fn sort_order_puts_null_last() {
        let mut vals = [
            Value::Null,
            Value::Int(3),
            Value::Str("a".into()),
            Value::Float(1.5),
            Value::Bool(true),
        ];
        vals.sort_by(|a, b| a.order(b));
        let names: Vec<_> = vals.iter().map(Value::type_name).collect();
        assert_eq!(names, ["STRING", "BOOLEAN", "FLOAT", "INTEGER", "NULL"]);
    }

    #[test]
    fn integers_and_floats_compare_exactly() {
        use Value::{Float, Int};
        let big = 1_i64 << 53;
        // 2^53 + 1 rounds to 2^53 as f64, but is greater than the float 2^53.
        assert_eq!(
            Int(big + 1).compare(&Float(big as f64)),
            Some(Ordering::Greater)
        );
        assert_eq!(Int(big + 1).equals(&Float(big as f64)), Some(false));
        assert_eq!(Float(big as f64).order(&Int(big + 1)), Ordering::Less);
        assert_eq!(
            Int(i64::MAX).compare(&Float(i64::MAX as f64)),
            Some(Ordering::Less)
        );
        assert_eq!(
            Int(i64::MIN).compare(&Float(i64::MIN as f64)),
            Some(Ordering::Equal)
        );
        assert_eq!(Int(-3).compare(&Float(-3.5)), Some(Ordering::Greater));
        assert_eq!(Int(-3).compare(&Float(-3.0)), Some(Ordering::Equal));
        assert_eq!(Int(3).compare(&Float(3.5)), Some(Ordering::Less));
        assert_eq!(Int(3).compare(&Float(f64::NAN)), None);
        assert_eq!(Float(f64::NAN).order(&Int(i64::MAX)), Ordering::Greater);
        assert_eq!(Float(f64::NAN).order(&Float(f64::NAN)), Ordering::Equal);
    }

    #[test]
    fn keys_merge_integral_floats() {
        assert_eq!(Value::Float(2.0).key(), Value::Int(2).key());
        assert_ne!(Value::Float(2.5).key(), Value::Int(2).key());
    }
}
