//! Aggregate functions: `count`, `sum`, `avg`, `min`, `max`, `collect`, each optionally
//! `DISTINCT`.

use std::collections::HashSet;

use crate::error::{CypherError, Result};
use crate::expr::CExpr;
use crate::functions::AggFunc;
use crate::value::{Key, Value};

/// One aggregate call in a projection.
#[derive(Clone, Debug)]
pub(crate) struct AggSpec {
    pub func: AggFunc,
    pub distinct: bool,
    /// The argument; `None` for `count(*)`.
    pub arg: Option<CExpr>,
}

/// The running state of one aggregate for one group.
#[derive(Debug)]
pub(crate) struct Acc {
    func: AggFunc,
    seen: Option<HashSet<Key>>,
    count: i64,
    /// The exact sum of the integers (i128: no i64 values can overflow it in practice).
    int_sum: i128,
    /// The sum of the floats.
    float_sum: f64,
    /// A float was added: `sum` is a float.
    has_float: bool,
    best: Option<Value>,
    items: Vec<Value>,
    /// The weight of the distinct keys and collected items.
    held: usize,
}

impl Acc {
    pub fn new(spec: &AggSpec) -> Acc {
        Acc {
            func: spec.func,
            seen: spec.distinct.then(HashSet::new),
            count: 0,
            int_sum: 0,
            float_sum: 0.0,
            has_float: false,
            best: None,
            items: Vec::new(),
            held: 0,
        }
    }

    /// Adds one row's value (`None` for `count(*)`, which counts rows).
    pub fn add(&mut self, value: Option<Value>) -> Result<()> {
        let Some(value) = value else {
            self.count += 1;
            return Ok(());
        };
        if value.is_null() {
            return Ok(());
        }
        if let Some(seen) = &mut self.seen {
            if !seen.insert(value.key()) {
                return Ok(());
            }
            self.held += value.weight();
        }
        self.count += 1;
        match self.func {
            AggFunc::Count => {}
            AggFunc::Sum | AggFunc::Avg => match value {
                Value::Int(i) => self.int_sum = self.int_sum.saturating_add(i.into()),
                Value::Float(f) => {
                    self.has_float = true;
                    self.float_sum += f;
                }
                other => {
                    return Err(CypherError::runtime(format!(
                        "{}() needs numbers but got {}",
                        if self.func == AggFunc::Sum {
                            "sum"
                        } else {
                            "avg"
                        },
                        other.type_name()
                    )));
                }
            },
            AggFunc::Min | AggFunc::Max => {
                let better = match &self.best {
                    None => true,
                    Some(best) => {
                        let ord = value.order(best);
                        if self.func == AggFunc::Min {
                            ord.is_lt()
                        } else {
                            ord.is_gt()
                        }
                    }
                };
                if better {
                    self.best = Some(value);
                }
            }
            AggFunc::Collect => {
                self.held += value.weight();
                self.items.push(value);
            }
        }
        Ok(())
    }

    /// The aggregate's value. The integers of `sum` and `avg` are summed exactly: `sum` of
    /// integers fails when the result does not fit in 64 bits (as in Neo4j; `sum` of floats
    /// is a float), whatever the order of the rows.
    pub fn finish(self) -> Result<Value> {
        Ok(match self.func {
            AggFunc::Count => Value::Int(self.count),
            AggFunc::Sum if self.has_float => Value::Float(self.float_sum + self.int_sum as f64),
            AggFunc::Sum => Value::Int(i64::try_from(self.int_sum).map_err(|_| {
                CypherError::runtime(format!(
                    "integer overflow: sum() of integers is {}, beyond the 64-bit integer range; \
                     sum toFloat() of the values for an approximate float sum",
                    self.int_sum
                ))
            })?),
            AggFunc::Avg if self.count == 0 => Value::Null,
            AggFunc::Avg => {
                Value::Float((self.float_sum + self.int_sum as f64) / self.count as f64)
            }
            AggFunc::Min | AggFunc::Max => self.best.unwrap_or(Value::Null),
            AggFunc::Collect => Value::List(self.items),
        })
    }

    /// Memory-relevant size: distinct keys and collected items, each by its
    /// [`Value::weight`], so a collected list counts its elements.
    pub fn held(&self) -> usize {
        self.held
    }
}
