//! How the engine's own types are stored: status enums as text (each column has a `CHECK`
//! constraint listing the same words), and the database's clock.
//!
//! Every lease deadline and due time is computed by the database from its own clock
//! ([`DbNow`]), so replicas whose clocks disagree never take each other's live work.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, expression::is_aggregate};

use crate::domain::{EffectKind, EffectStatus, ShipmentStatus, Status};

/// Stores `$type` as the text of its `as_str`, and reads it back with its `parse`; a word
/// the type does not know is an error, never a default.
macro_rules! stored_as_text {
    ($($type:ty),+) => {$(
        impl<DB: Backend> ToSql<Text, DB> for $type
        where
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                self.as_str().to_sql(out)
            }
        }

        impl<DB: Backend> FromSql<Text, DB> for $type
        where
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                let raw = String::from_sql(bytes)?;
                <$type>::parse(&raw).ok_or_else(|| {
                    format!("unknown {} {raw:?} in the database", stringify!($type)).into()
                })
            }
        }
    )+};
}

stored_as_text!(EffectKind, EffectStatus, ShipmentStatus, Status);

/// The database's clock, in milliseconds since the Unix epoch, plus `offset_ms`.
#[derive(Debug, Clone, Copy, QueryId)]
pub struct DbNow {
    offset_ms: i64,
}

impl DbNow {
    /// Now, by the database's clock.
    pub fn now() -> Self {
        Self { offset_ms: 0 }
    }

    /// `duration` ago, by the database's clock.
    pub fn before(duration: std::time::Duration) -> Self {
        Self {
            offset_ms: -super::millis(duration),
        }
    }

    /// `duration` from now, by the database's clock.
    pub fn after(duration: std::time::Duration) -> Self {
        Self {
            offset_ms: super::millis(duration),
        }
    }
}

/// The SQL for the database's clock in milliseconds, per backend, as a literal that
/// hand-written queries can `concat!`.
macro_rules! now_ms_sql {
    (postgres) => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    };
    (sqlite) => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}
pub(crate) use now_ms_sql;

impl Expression for DbNow {
    type SqlType = BigInt;
}

impl<QS: ?Sized> AppearsOnTable<QS> for DbNow {}

impl<QS: ?Sized> SelectableExpression<QS> for DbNow {}

impl<GroupBy> ValidGrouping<GroupBy> for DbNow {
    type IsAggregate = is_aggregate::Never;
}

impl DbNow {
    fn walk<'b, DB>(&'b self, mut out: AstPass<'_, 'b, DB>, clock: &'static str) -> QueryResult<()>
    where
        DB: Backend,
        i64: ToSql<BigInt, DB>,
        DB: diesel::sql_types::HasSqlType<BigInt>,
    {
        out.push_sql("(");
        out.push_sql(clock);
        out.push_sql(" + ");
        out.push_bind_param::<BigInt, _>(&self.offset_ms)?;
        out.push_sql(")");
        Ok(())
    }
}

impl QueryFragment<Pg> for DbNow {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.walk(out, now_ms_sql!(postgres))
    }
}

impl QueryFragment<Sqlite> for DbNow {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.walk(out, now_ms_sql!(sqlite))
    }
}
