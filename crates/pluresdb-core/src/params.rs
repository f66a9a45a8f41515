//! Statement parameters: positional (`?`, `?NNN`) and named (`:name`, `@name`, `$name`).
//!
//! Positional values must match the statement's parameter count exactly; named values are
//! looked up by name (with or without the prefix), a missing one is an error and extra keys
//! are ignored, as in better-sqlite3 and Python's sqlite3.

use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::value::{ToParam, Value};

/// Values for a statement's parameters. Implemented for `()`, tuples, arrays, slices and
/// `Vec`s of [`ToParam`] values, `[(name, value)]` lists (see
/// [`named_params!`](crate::named_params)) and JSON (an array is positional, an object named).
pub trait Params {
    /// Binds the values through `binder`.
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()>;
}

/// Binds values to one statement; handed to [`Params::bind`].
pub struct Binder<'s, 'c> {
    stmt: &'s mut rusqlite::Statement<'c>,
    count: usize,
    bound: usize,
}

impl<'s, 'c> Binder<'s, 'c> {
    pub(crate) fn new(stmt: &'s mut rusqlite::Statement<'c>) -> Self {
        let count = stmt.parameter_count();
        Binder {
            stmt,
            count,
            bound: 0,
        }
    }

    /// Binds the next positional value.
    #[inline]
    pub fn push<T: ToParam + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.bound += 1;
        if self.bound <= self.count {
            let index = self.bound;
            value
                .bind_at(self, index)
                .map_err(|e| e.context(format!("parameter {index}")))?;
        }
        Ok(())
    }

    /// Binds a converted value at a 1-based index.
    pub(crate) fn bind_param(
        &mut self,
        index: usize,
        value: crate::value::Param<'_>,
    ) -> Result<()> {
        self.stmt.raw_bind_parameter(index, value)?;
        Ok(())
    }

    /// Binds a value rusqlite knows natively (the fast path for plain numbers and text).
    #[inline]
    pub(crate) fn bind_native<T: rusqlite::ToSql>(&mut self, index: usize, value: T) -> Result<()> {
        self.stmt.raw_bind_parameter(index, value)?;
        Ok(())
    }

    /// Binds every parameter by name: `lookup` gets the name without its prefix character
    /// and returns the value, or `None` when there is none.
    pub fn named<'v>(
        &mut self,
        lookup: impl Fn(&str, &str) -> Option<&'v dyn ToParam>,
    ) -> Result<()> {
        for index in 1..=self.count {
            let Some(full) = self.stmt.parameter_name(index) else {
                return Err(Error::invalid(format!(
                    "parameter {index} of the statement is positional (?), so the values must be \
                     a list, not named"
                )));
            };
            let full = full.to_owned();
            let bare = full.trim_start_matches([':', '@', '$', '?']);
            let Some(value) = lookup(&full, bare) else {
                return Err(Error::invalid(format!(
                    "missing value for named parameter {full}"
                )));
            };
            let value = value
                .to_param()
                .map_err(|e| e.context(format!("parameter {full}")))?;
            self.stmt.raw_bind_parameter(index, value)?;
        }
        self.bound = self.count;
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.bound == self.count {
            return Ok(());
        }
        let names: Vec<String> = (1..=self.count)
            .map(|i| {
                self.stmt
                    .parameter_name(i)
                    .map_or_else(|| format!("?{i}"), str::to_owned)
            })
            .collect();
        let list = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        };
        Err(Error::invalid(format!(
            "wrong number of parameters: the statement takes {} ({list}), {} given",
            self.count,
            if self.bound == 1 {
                "1 was".to_owned()
            } else {
                format!("{} were", self.bound)
            }
        )))
    }
}

impl Params for () {
    fn bind(&self, _: &mut Binder<'_, '_>) -> Result<()> {
        Ok(())
    }
}

impl<P: Params + ?Sized> Params for &P {
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
        (**self).bind(binder)
    }
}

macro_rules! tuple_params {
    ($($name:ident),+) => {
        impl<$($name: ToParam),+> Params for ($($name,)+) {
            #[allow(non_snake_case)]
            fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
                let ($($name,)+) = self;
                $(binder.push($name)?;)+
                Ok(())
            }
        }
    };
}
tuple_params!(A);
tuple_params!(A, B);
tuple_params!(A, B, C);
tuple_params!(A, B, C, D);
tuple_params!(A, B, C, D, E);
tuple_params!(A, B, C, D, E, F);
tuple_params!(A, B, C, D, E, F, G);
tuple_params!(A, B, C, D, E, F, G, H);
tuple_params!(A, B, C, D, E, F, G, H, I);
tuple_params!(A, B, C, D, E, F, G, H, I, J);
tuple_params!(A, B, C, D, E, F, G, H, I, J, K);
tuple_params!(A, B, C, D, E, F, G, H, I, J, K, L);

impl<T: ToParam> Params for [T] {
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
        self.iter().try_for_each(|v| binder.push(v))
    }
}

impl<T: ToParam, const N: usize> Params for [T; N] {
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
        self.as_slice().bind(binder)
    }
}

impl<T: ToParam> Params for Vec<T> {
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
        self.as_slice().bind(binder)
    }
}

/// Named values: `[(":name", &value as &dyn ToParam), ...]`; build it with
/// [`named_params!`](crate::named_params).
pub type NamedParams<'a> = [(&'a str, &'a dyn ToParam)];

fn find_named<'v, K: AsRef<str>>(
    pairs: &'v [(K, &'v dyn ToParam)],
    full: &str,
    bare: &str,
) -> Option<&'v dyn ToParam> {
    pairs
        .iter()
        .find(|(k, _)| k.as_ref() == full)
        .or_else(|| pairs.iter().find(|(k, _)| k.as_ref() == bare))
        .map(|(_, v)| *v)
}

impl Params for NamedParams<'_> {
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
        binder.named(|full, bare| find_named(self, full, bare))
    }
}

impl<const N: usize> Params for [(&str, &dyn ToParam); N] {
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
        self.as_slice().bind(binder)
    }
}

impl Params for [(String, Value)] {
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
        binder.named(|full, bare| {
            self.iter()
                .find(|(k, _)| k == full)
                .or_else(|| self.iter().find(|(k, _)| k == bare))
                .map(|(_, v)| v as &dyn ToParam)
        })
    }
}

impl Params for Vec<(String, Value)> {
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
        self.as_slice().bind(binder)
    }
}

impl Params for serde_json::Map<String, Json> {
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
        binder.named(|full, bare| {
            self.get(full)
                .or_else(|| self.get(bare))
                .map(|v| v as &dyn ToParam)
        })
    }
}

impl Params for Json {
    fn bind(&self, binder: &mut Binder<'_, '_>) -> Result<()> {
        match self {
            Json::Null => Ok(()),
            Json::Array(items) => items.as_slice().bind(binder),
            Json::Object(map) => map.bind(binder),
            scalar => binder.push(scalar),
        }
    }
}

/// Positional parameters of mixed types: `params![1, "two", 3.0]`.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::ToParam] };
    ($($value:expr),+ $(,)?) => { &[$(&$value as &dyn $crate::ToParam),+] as &[&dyn $crate::ToParam] };
}

/// Named parameters: `named_params! { ":id": 1, "name": "Ada" }` (the prefix is optional).
#[macro_export]
macro_rules! named_params {
    () => { &[] as &$crate::NamedParams<'_> };
    ($($name:literal : $value:expr),+ $(,)?) => {
        &[$(($name, &$value as &dyn $crate::ToParam)),+] as &$crate::NamedParams<'_>
    };
}
