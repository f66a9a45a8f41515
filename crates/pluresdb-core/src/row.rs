//! Result rows: values with their column names, readable by index, by name, as a JSON
//! object, as a typed tuple or as any `serde` type.

use std::sync::Arc;

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::value::{FromValue, Value, ValueRef};

/// Name and declared type of one result column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column name as SQLite reports it (the `AS` alias when there is one).
    pub name: String,
    /// The declared type of the table column it comes from (`None` for expressions).
    pub decl_type: Option<String>,
}

/// The columns of a result, shared by all its rows.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Columns {
    columns: Vec<Column>,
}

impl Columns {
    pub(crate) fn from_statement(stmt: &rusqlite::Statement<'_>) -> Columns {
        let columns = stmt
            .columns()
            .map(|c| Column {
                name: c.name().to_owned(),
                decl_type: c.decl_type().map(str::to_owned),
            })
            .collect();
        Columns { columns }
    }

    /// True when `stmt` still has exactly these column names (schema unchanged).
    pub(crate) fn matches(&self, stmt: &rusqlite::Statement<'_>) -> bool {
        stmt.column_count() == self.columns.len()
            && self
                .columns
                .iter()
                .enumerate()
                .all(|(i, c)| stmt.column_name(i).is_ok_and(|n| n == c.name))
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True when the statement returns no columns (INSERT, UPDATE, ... without RETURNING).
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The columns in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Column> {
        self.columns.iter()
    }

    /// The column names in order.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// Index of the first column called `name` (exact match first, then ASCII case-insensitive,
    /// as SQLite resolves names).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .or_else(|| {
                self.columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(name))
            })
    }
}

/// Values of one row; rows of up to four columns need no allocation of their own.
type RowValues = smallvec::SmallVec<[Value; 4]>;

/// One result row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    columns: Arc<Columns>,
    values: RowValues,
}

/// A column given by position or by name.
pub trait ColumnIndex {
    /// Resolves to a position in `columns`.
    fn index(&self, columns: &Columns) -> Result<usize>;
}

impl ColumnIndex for usize {
    fn index(&self, columns: &Columns) -> Result<usize> {
        if *self < columns.len() {
            Ok(*self)
        } else {
            Err(Error::invalid(format!(
                "column index {self} is out of range: the row has {} column(s)",
                columns.len()
            )))
        }
    }
}

impl ColumnIndex for &str {
    fn index(&self, columns: &Columns) -> Result<usize> {
        columns.index_of(self).ok_or_else(|| {
            Error::invalid(format!(
                "no column named {self:?}; the row has {}",
                columns.names().join(", ")
            ))
        })
    }
}

impl Row {
    pub(crate) fn read(columns: &Arc<Columns>, row: &rusqlite::Row<'_>) -> Result<Row> {
        RowRef { columns, row }.to_row()
    }

    /// The columns of this row.
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// The values in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Takes the values out.
    pub fn into_values(self) -> Vec<Value> {
        self.values.into_vec()
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True for a row without columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The raw value of a column (by position or name).
    pub fn value(&self, column: impl ColumnIndex) -> Result<&Value> {
        Ok(&self.values[column.index(&self.columns)?])
    }

    /// A column converted to `T`; the error names the column and the type found.
    pub fn get<T: FromValue>(&self, column: impl ColumnIndex) -> Result<T> {
        let i = column.index(&self.columns)?;
        T::from_value(&self.values[i])
            .map_err(|e| e.context(format!("column {i} ({:?})", self.columns.columns[i].name)))
    }

    /// `(column name, value)` pairs in column order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .zip(self.values.iter())
    }

    /// The row as a JSON object keyed by column name (integers exact, blobs as `{"$blob"}`).
    ///
    /// Every column is kept: a name seen before gets a suffix `:N`, N counting its earlier
    /// uses (`SELECT a.id, b.id` gives `{"id", "id:1"}`), skipping keys already taken.
    pub fn to_json(&self) -> Json {
        let mut map = Map::with_capacity(self.values.len());
        for (c, v) in self.columns.iter().zip(&self.values) {
            let mut key = c.name.clone();
            let mut n = 0;
            while map.contains_key(&key) {
                n += 1;
                key = format!("{}:{n}", c.name);
            }
            map.insert(key, v.to_json());
        }
        Json::Object(map)
    }

    /// The row converted to a typed tuple such as `(i64, String, Option<f64>)`.
    pub fn decode<T: FromRow>(&self) -> Result<T> {
        T::from_row(self)
    }

    /// The row deserialized into any `serde` type, through its JSON object form.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.to_json())
            .map_err(|e| Error::invalid(format!("cannot read row into the requested type: {e}")))
    }
}

/// A row as SQLite holds it, before anything is copied: typed reads go straight into Rust
/// values (what [`Database::all_as`](crate::Database::all_as) uses).
pub struct RowRef<'a> {
    columns: &'a Arc<Columns>,
    row: &'a rusqlite::Row<'a>,
}

impl<'a> RowRef<'a> {
    pub(crate) fn new(columns: &'a Arc<Columns>, row: &'a rusqlite::Row<'a>) -> RowRef<'a> {
        RowRef { columns, row }
    }

    /// The columns of this row.
    pub fn columns(&self) -> &Columns {
        self.columns
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True for a row without columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The borrowed value of a column.
    pub fn value(&self, column: impl ColumnIndex) -> Result<ValueRef<'_>> {
        let i = column.index(self.columns)?;
        Ok(ValueRef::from_sqlite(self.row.get_ref(i)?))
    }

    /// A column converted to `T`; the error names the column and the type found.
    #[inline]
    pub fn get<T: FromValue>(&self, column: impl ColumnIndex) -> Result<T> {
        let i = column.index(self.columns)?;
        T::from_value_ref(ValueRef::from_sqlite(self.row.get_ref(i)?))
            .map_err(|e| e.context(format!("column {i} ({:?})", self.columns.columns[i].name)))
    }

    /// Copies the row out.
    pub fn to_row(&self) -> Result<Row> {
        let mut values = RowValues::with_capacity(self.columns.len());
        for i in 0..self.columns.len() {
            values.push(Value::from_ref(self.row.get_ref(i)?));
        }
        Ok(Row {
            columns: self.columns.clone(),
            values,
        })
    }
}

/// Converts a row into a Rust value (implemented for [`Row`], JSON and tuples of
/// [`FromValue`]). Tuples read straight from SQLite without copying the row first.
pub trait FromRow: Sized {
    /// Converts an owned row.
    fn from_row(row: &Row) -> Result<Self>;

    /// Converts a borrowed row (by default through an owned copy).
    fn from_row_ref(row: &RowRef<'_>) -> Result<Self> {
        Self::from_row(&row.to_row()?)
    }
}

impl FromRow for Row {
    fn from_row(row: &Row) -> Result<Self> {
        Ok(row.clone())
    }

    fn from_row_ref(row: &RowRef<'_>) -> Result<Self> {
        row.to_row()
    }
}

impl FromRow for Json {
    fn from_row(row: &Row) -> Result<Self> {
        Ok(row.to_json())
    }
}

macro_rules! tuple_from_row {
    ($n:expr; $($name:ident $idx:tt),+) => {
        impl<$($name: FromValue),+> FromRow for ($($name,)+) {
            fn from_row(row: &Row) -> Result<Self> {
                if row.len() < $n {
                    return Err(Error::invalid(format!(
                        "the row has {} column(s), the tuple needs {}", row.len(), $n
                    )));
                }
                Ok(($(row.get::<$name>($idx)?,)+))
            }

            #[inline]
            fn from_row_ref(row: &RowRef<'_>) -> Result<Self> {
                if row.len() < $n {
                    return Err(Error::invalid(format!(
                        "the row has {} column(s), the tuple needs {}", row.len(), $n
                    )));
                }
                Ok(($(row.get::<$name>($idx)?,)+))
            }
        }
    };
}
tuple_from_row!(1; A 0);
tuple_from_row!(2; A 0, B 1);
tuple_from_row!(3; A 0, B 1, C 2);
tuple_from_row!(4; A 0, B 1, C 2, D 3);
tuple_from_row!(5; A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(6; A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
