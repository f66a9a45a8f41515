//! Table-valued SQL functions (`SELECT * FROM name(arg, ...)`) as eponymous virtual tables:
//! the shared plumbing (argument columns, planning, cursor), so each function only says what
//! rows its arguments give.

use std::borrow::Cow;
use std::ffi::{CStr, c_int};
use std::marker::PhantomData;

use rusqlite::types::ValueRef;
use rusqlite::vtab::{
    Context, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConfig, VTabConnection,
    VTabCursor,
};
use rusqlite::{Connection, ffi};

use crate::error::{Error, Result};
use crate::value::Value;

/// One table-valued function.
pub(crate) trait TableFunction: Sized + 'static {
    /// What the function needs from its database (shared by all connections).
    type State: Clone + Send + Sync + 'static;
    /// The rows one call produces.
    type Rows: RowSet;
    /// `CREATE TABLE x(<visible columns>, <arguments> HIDDEN, ...)`.
    const SCHEMA: &'static CStr;
    /// Number of visible (result) columns; the hidden argument columns follow them.
    const COLUMNS: usize;
    /// Number of arguments (hidden columns).
    const ARGS: usize;
    /// Leading arguments that must be given.
    const REQUIRED: usize;
    /// How to call it, for errors.
    const USAGE: &'static str;
    /// True when the rows come out ordered by the second column (e.g. a distance), so
    /// `ORDER BY` on it needs no sort.
    const ORDERED_BY_SECOND: bool = false;

    /// The module to register (a `static` in each implementation).
    fn module() -> &'static Module<'static, FnTab<Self>>;

    /// The rows for these arguments (`args[i]` is `None` when argument `i` was not given).
    fn rows(
        state: &Self::State,
        conn: &Connection,
        args: &[Option<ValueRef<'_>>],
    ) -> Result<Self::Rows>;
}

/// The rows of one call. Columns are read one at a time, so a column that is costly to
/// build is only built for the queries that read it.
pub(crate) trait RowSet: Default + 'static {
    /// Number of rows.
    fn len(&self) -> usize;
    /// The rowid of row `row`.
    fn rowid(&self, row: usize) -> i64;
    /// Sets `ctx` to column `col` (a visible column) of row `row`.
    fn column(&self, row: usize, col: usize, ctx: &mut Context) -> rusqlite::Result<()>;
}

/// Rows built up front: `(rowid, values of the visible columns)`.
impl RowSet for Vec<(i64, Vec<Value>)> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn rowid(&self, row: usize) -> i64 {
        self[row].0
    }

    fn column(&self, row: usize, col: usize, ctx: &mut Context) -> rusqlite::Result<()> {
        match self[row].1.get(col) {
            Some(v) => ctx.set_result(v),
            None => ctx.set_result(rusqlite::types::Null),
        }
    }
}

/// Lets a module live in a `static` (SQLite only reads it).
pub(crate) struct StaticModule<T: VTab<'static> + 'static>(pub(crate) Module<'static, T>);

// SAFETY: the module is an immutable table of function pointers that SQLite only reads.
unsafe impl<T: VTab<'static> + 'static> Sync for StaticModule<T> {}

/// Writes a `TableFunction::module` that returns a static module for `$ty`.
macro_rules! static_module {
    ($ty:ty) => {
        fn module() -> &'static rusqlite::vtab::Module<'static, $crate::table_fn::FnTab<Self>> {
            static M: $crate::table_fn::StaticModule<$crate::table_fn::FnTab<$ty>> =
                $crate::table_fn::StaticModule(rusqlite::vtab::Module::eponymous_only_module());
            &M.0
        }
    };
}
pub(crate) use static_module;

/// Registers `F` on `conn` under `name`.
pub(crate) fn register<F: TableFunction>(
    conn: &Connection,
    name: &CStr,
    state: F::State,
) -> Result<()> {
    conn.create_module(name, F::module(), Some(state))?;
    Ok(())
}

#[repr(C)]
pub(crate) struct FnTab<F: TableFunction> {
    base: ffi::sqlite3_vtab,
    state: F::State,
    /// The connection running the query (not owned); its statement cache keeps the function's
    /// own queries prepared between calls.
    conn: Connection,
    _f: PhantomData<F>,
}

unsafe impl<'vtab, F: TableFunction> VTab<'vtab> for FnTab<F> {
    type Aux = F::State;
    type Cursor = RowsCursor<'vtab, F>;

    fn connect(
        db: &mut VTabConnection,
        aux: Option<&F::State>,
        _module: &[u8],
        _database: &[u8],
        _table: &[u8],
        _args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, FnTab<F>)> {
        let state = aux.cloned().ok_or_else(|| {
            rusqlite::Error::ModuleError("table function without a database".into())
        })?;
        db.config(VTabConfig::Innocuous)?;
        // SAFETY: SQLite disconnects eponymous tables before it closes the connection, and the
        // non-owning Connection never closes the handle.
        let conn = unsafe { Connection::from_handle(db.handle())? };
        Ok((
            Cow::Borrowed(F::SCHEMA),
            FnTab {
                base: ffi::sqlite3_vtab::default(),
                state,
                conn,
                _f: PhantomData,
            },
        ))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let mut given: u32 = 0;
        let mut unusable: u32 = 0;
        let mut slots: Vec<Option<usize>> = vec![None; F::ARGS];
        for (i, c) in info.constraints().enumerate() {
            let Some(arg) = (c.column() as usize)
                .checked_sub(F::COLUMNS)
                .filter(|a| *a < F::ARGS)
            else {
                continue;
            };
            if !c.is_usable() {
                unusable |= 1 << arg;
            } else if c.operator() == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ {
                given |= 1 << arg;
                slots[arg] = Some(i);
            }
        }
        if unusable & !given != 0 {
            // An argument comes from a table not read yet: ask SQLite for another join order.
            return Ok(false);
        }
        let mut n = 0;
        for i in slots.iter().flatten() {
            n += 1;
            let mut usage = info.constraint_usage(*i);
            usage.set_argv_index(n);
            usage.set_omit(true);
        }
        if F::ORDERED_BY_SECOND
            && info.num_of_order_by() == 1
            && let Some(order) = info.order_bys().next()
            && order.column() == 1
            && !order.is_order_by_desc()
        {
            info.set_order_by_consumed(true);
        }
        let required = (1u32 << F::REQUIRED) - 1;
        info.set_estimated_cost(if given & required == required {
            10.0
        } else {
            1e12
        });
        info.set_idx_num(given as c_int);
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<RowsCursor<'vtab, F>> {
        Ok(RowsCursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            tab: self,
            rows: F::Rows::default(),
            pos: 0,
        })
    }
}

#[repr(C)]
pub(crate) struct RowsCursor<'vtab, F: TableFunction> {
    base: ffi::sqlite3_vtab_cursor,
    tab: &'vtab FnTab<F>,
    rows: F::Rows,
    pos: usize,
}

impl<F: TableFunction> RowsCursor<'_, F> {
    fn run(&mut self, given: c_int, args: &Filters<'_>) -> Result<()> {
        let mut values = args.iter();
        let mut by_position: Vec<Option<ValueRef<'_>>> = Vec::with_capacity(F::ARGS);
        for i in 0..F::ARGS {
            by_position.push(if given & (1 << i) != 0 {
                values.next()
            } else {
                None
            });
        }
        if by_position[..F::REQUIRED].iter().any(Option::is_none) {
            return Err(Error::invalid(F::USAGE));
        }
        self.rows = F::rows(&self.tab.state, &self.tab.conn, &by_position)?;
        Ok(())
    }
}

unsafe impl<F: TableFunction> VTabCursor for RowsCursor<'_, F> {
    fn filter(
        &mut self,
        idx_num: c_int,
        _idx_str: Option<&str>,
        args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        self.pos = 0;
        self.rows = F::Rows::default();
        self.run(idx_num, args)
            .map_err(|e| rusqlite::Error::ModuleError(e.to_string()))
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.pos += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.pos >= self.rows.len()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        self.rows.column(self.pos, i as usize, ctx)
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.rows.rowid(self.pos))
    }
}

/// Argument `i` as text (`None` when NULL or not given).
pub(crate) fn text_arg(
    args: &[Option<ValueRef<'_>>],
    i: usize,
    what: &str,
) -> Result<Option<String>> {
    match args.get(i).copied().flatten() {
        None | Some(ValueRef::Null) => Ok(None),
        Some(ValueRef::Text(t)) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
        Some(_) => Err(Error::invalid(format!("{what} must be text"))),
    }
}

/// Argument `i` as an integer (`None` when NULL or not given).
pub(crate) fn int_arg(args: &[Option<ValueRef<'_>>], i: usize, what: &str) -> Result<Option<i64>> {
    match args.get(i).copied().flatten() {
        None | Some(ValueRef::Null) => Ok(None),
        Some(ValueRef::Integer(n)) => Ok(Some(n)),
        Some(_) => Err(Error::invalid(format!("{what} must be an integer"))),
    }
}
