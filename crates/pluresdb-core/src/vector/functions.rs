//! SQL functions for vectors: the sqlite-vec scalars (`vec_f32`, `vec_to_json`, `vec_length`,
//! `vec_normalize`, `vec_distance_cosine`, `vec_distance_l2`) and our `vec_distance_dot`, the
//! trigger helpers, `pluresdb_embed(text)`, and `pluresdb_vector_index(...)` on the writer.

use std::str::FromStr;
use std::sync::Arc;

use pluresdb_vector::Metric;
use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;

use super::defs::{self, NewIndex};
use super::parse::{parse_vector, to_blob, to_json};
use super::registry::VectorRegistry;
use crate::error::{Error, Result, user_function_error};

/// Argument `i` as a vector (NULL stays `None`).
fn arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Option<Vec<f32>>> {
    parse_vector(ctx.get_raw(i)).map_err(user_function_error)
}

/// What the error of a vector whose size is not the index's says (merges refuse such rows:
/// the error comes back through SQLite, so it is told by this text).
pub(crate) const WRONG_SIZE: &str = "dimensions but the index has";

/// Checks a vector against an index's dimension and metric.
pub(crate) fn check_vector(v: &[f32], dim: usize, metric: Metric) -> Result<()> {
    if v.len() != dim {
        return Err(Error::invalid(format!(
            "the vector has {} {WRONG_SIZE} {dim}; use vectors of the same model/size, or drop \
             and recreate the index",
            v.len()
        )));
    }
    super::parse::check_finite(v)?;
    if metric == Metric::Cosine && v.iter().all(|x| *x == 0.0) {
        return Err(Error::invalid(
            "a zero vector has no direction, so a cosine index cannot hold it",
        ));
    }
    Ok(())
}

fn pair(ctx: &Context<'_>, name: &str) -> rusqlite::Result<Option<(Vec<f32>, Vec<f32>)>> {
    let (Some(a), Some(b)) = (arg(ctx, 0)?, arg(ctx, 1)?) else {
        return Ok(None);
    };
    if a.len() != b.len() {
        return Err(user_function_error(format!(
            "{name}: the vectors have different lengths ({} and {})",
            a.len(),
            b.len()
        )));
    }
    Ok(Some((a, b)))
}

/// Registers the functions that need no database state, on every connection.
pub(crate) fn register_pure(conn: &Connection) -> Result<()> {
    let pure = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("vec_f32", 1, pure, |ctx| {
        Ok(arg(ctx, 0)?.map(|v| to_blob(&v)))
    })?;
    conn.create_scalar_function("vec_to_json", 1, pure, |ctx| {
        Ok(arg(ctx, 0)?.map(|v| to_json(&v)))
    })?;
    conn.create_scalar_function("vec_length", 1, pure, |ctx| {
        Ok(arg(ctx, 0)?.map(|v| v.len() as i64))
    })?;
    conn.create_scalar_function("vec_normalize", 1, pure, |ctx| {
        let Some(mut v) = arg(ctx, 0)? else {
            return Ok(None);
        };
        pluresdb_vector::normalize(&mut v).map_err(user_function_error)?;
        Ok(Some(to_blob(&v)))
    })?;
    // In f64: these are one-off calls, and f32 sums overflow or underflow for components
    // past about 1e19 or below 1e-19 (NaN became NULL; a real cosine of 0 was an error).
    conn.create_scalar_function("vec_distance_l2", 2, pure, |ctx| {
        Ok(pair(ctx, "vec_distance_l2")?.map(|(a, b)| {
            a.iter()
                .zip(&b)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum::<f64>()
                .sqrt()
        }))
    })?;
    conn.create_scalar_function("vec_distance_dot", 2, pure, |ctx| {
        Ok(pair(ctx, "vec_distance_dot")?.map(|(a, b)| 1.0 - dot64(&a, &b)))
    })?;
    conn.create_scalar_function("vec_distance_cosine", 2, pure, |ctx| {
        let Some((a, b)) = pair(ctx, "vec_distance_cosine")? else {
            return Ok(None);
        };
        let norms = (dot64(&a, &a) * dot64(&b, &b)).sqrt();
        if norms == 0.0 {
            return Err(user_function_error(
                "vec_distance_cosine: a zero vector has no direction",
            ));
        }
        Ok(Some(1.0 - dot64(&a, &b) / norms))
    })?;
    // Used by the index triggers.
    conn.create_scalar_function("pluresdb_vector_dim", 1, pure, |ctx| {
        Ok(parse_vector(ctx.get_raw(0))
            .ok()
            .flatten()
            .map(|v| v.len() as i64))
    })?;
    conn.create_scalar_function("pluresdb_vector_check", 3, pure, |ctx| {
        let v = arg(ctx, 0)?;
        let dim: Option<i64> = ctx.get(1)?;
        let metric: String = ctx.get(2)?;
        if let (Some(v), Some(dim)) = (v, dim) {
            let metric = Metric::from_str(&metric).map_err(user_function_error)?;
            check_vector(&v, dim as usize, metric).map_err(user_function_error)?;
        }
        Ok(rusqlite::types::Null)
    })?;
    Ok(())
}

/// The dot product of `a` and `b` (of equal length), summed in f64.
fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

/// Argument `i` of a function call as text; `usage` when it is not text.
fn text(ctx: &Context<'_>, i: usize, usage: &str) -> rusqlite::Result<String> {
    match ctx.get_raw(i) {
        ValueRef::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
        _ => Err(user_function_error(usage)),
    }
}

/// Registers what needs the database's vector state: `pluresdb_embed(text)` and the
/// `vector_search` table; on the writer also `pluresdb_vector_index(...)` and
/// `pluresdb_vector_index_drop(...)`.
pub(crate) fn register_stateful(
    conn: &Connection,
    registry: &Arc<VectorRegistry>,
    writer: bool,
) -> Result<()> {
    let r = registry.clone();
    conn.create_scalar_function(
        "pluresdb_embed",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |ctx| match ctx.get_raw(0) {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => {
                let text = std::str::from_utf8(t).map_err(user_function_error)?;
                Ok(Some(to_blob(&r.embed(text).map_err(user_function_error)?)))
            }
            _ => Err(user_function_error("pluresdb_embed takes text")),
        },
    )?;
    super::vtab::register(conn, registry.clone())?;
    if !writer {
        return Ok(());
    }
    let direct = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;
    const CREATE_USAGE: &str =
        "use pluresdb_vector_index(table, column [, metric [, options_json]]) with text arguments";
    let r = registry.clone();
    conn.create_scalar_function("pluresdb_vector_index", -1, direct, move |ctx| {
        if !(2..=4).contains(&ctx.len()) {
            return Err(user_function_error(CREATE_USAGE));
        }
        let table = text(ctx, 0, CREATE_USAGE)?;
        let column = text(ctx, 1, CREATE_USAGE)?;
        let metric: Option<String> = if ctx.len() > 2 { ctx.get(2)? } else { None };
        let options: Option<String> = if ctx.len() > 3 { ctx.get(3)? } else { None };
        let new = NewIndex::from_json(metric.as_deref(), options.as_deref())
            .map_err(user_function_error)?;
        // SAFETY: the handle is the writer connection running this statement, used on this
        // thread only, for the duration of the call.
        let conn = unsafe { ctx.get_connection()? };
        let def = defs::create(&conn, &table, &column, &new).map_err(user_function_error)?;
        r.forget_missing(&conn).map_err(user_function_error)?;
        Ok(def.name())
    })?;
    let r = registry.clone();
    const DROP_USAGE: &str = "use pluresdb_vector_index_drop(table [, column]) with text arguments";
    conn.create_scalar_function("pluresdb_vector_index_drop", -1, direct, move |ctx| {
        if !(1..=2).contains(&ctx.len()) {
            return Err(user_function_error(DROP_USAGE));
        }
        let table = text(ctx, 0, DROP_USAGE)?;
        let column = if ctx.len() > 1 {
            text(ctx, 1, DROP_USAGE)?
        } else {
            String::new()
        };
        // SAFETY: as above.
        let conn = unsafe { ctx.get_connection()? };
        let dropped = defs::drop_index(&conn, &table, &column).map_err(user_function_error)?;
        if let Some(def) = &dropped {
            r.forget(def.id);
        }
        Ok(dropped.is_some())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_functions_match_sqlite_vec() {
        let conn = Connection::open_in_memory().unwrap();
        register_pure(&conn).unwrap();
        let one = |sql: &str| -> rusqlite::Result<rusqlite::types::Value> {
            conn.query_row(sql, [], |r| r.get(0))
        };
        use rusqlite::types::Value as V;
        assert_eq!(
            one("SELECT vec_to_json(vec_f32('[1, 2.5]'))").unwrap(),
            V::Text("[1,2.5]".into())
        );
        assert_eq!(
            one("SELECT vec_length(vec_f32('[1, 2, 3]'))").unwrap(),
            V::Integer(3)
        );
        assert_eq!(
            one("SELECT vec_distance_l2('[0, 0]', '[3, 4]')").unwrap(),
            V::Real(5.0)
        );
        assert_eq!(
            one("SELECT vec_distance_cosine('[1, 0]', '[0, 2]')").unwrap(),
            V::Real(1.0)
        );
        assert_eq!(
            one("SELECT vec_distance_dot('[1, 0]', '[0.5, 2]')").unwrap(),
            V::Real(0.5)
        );
        assert_eq!(
            one("SELECT vec_to_json(vec_normalize('[3, 4]'))").unwrap(),
            V::Text("[0.6,0.8]".into())
        );
        assert_eq!(one("SELECT vec_f32(NULL)").unwrap(), V::Null);
        let err = one("SELECT vec_distance_l2('[1]', '[1, 2]')")
            .unwrap_err()
            .to_string();
        assert!(err.contains("different lengths (1 and 2)"), "{err}");
        let err = one("SELECT vec_f32('[1, nope]')").unwrap_err().to_string();
        assert!(err.contains("JSON array of numbers"), "{err}");
        // Components whose squares leave f32's range: real answers, not NULL or an error.
        assert_eq!(
            one("SELECT round(vec_distance_cosine('[1e30, 1e30]', '[1e30, 1e30]'), 9)").unwrap(),
            V::Real(0.0)
        );
        assert_eq!(
            one("SELECT vec_distance_dot('[1e30, 1e30]', '[1e30, -1e30]')").unwrap(),
            V::Real(1.0)
        );
        assert_eq!(
            one("SELECT vec_to_json(vec_normalize('[1e-30, 0]'))").unwrap(),
            V::Text("[1,0]".into())
        );
    }
}
