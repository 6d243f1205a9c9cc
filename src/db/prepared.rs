//! Statements prepared once per connection.
//!
//! diesel prepares a statement once and keeps it only when it can prove that the statement's
//! text never depends on its values. It cannot prove that for any `UPDATE` (a changeset of
//! `Option`s may leave columns out) nor for raw SQL, so it prepares those again every time
//! they run: on PostgreSQL a round trip of its own before the statement itself, and on
//! SQLite a parse. The hot ones (marking an event processed, the claims, the settles) are
//! wrapped in [`Prepared`], which vouches for them.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::QueryResult;

/// A statement whose text does not depend on its bound values, kept prepared by the
/// connection like any statement diesel can prove so. Only for statements where that holds:
/// an `UPDATE` whose changeset has no `Option` (a `None` bound as `NULL` is a value, and
/// is fine), or raw SQL that is a constant.
#[derive(Debug, Clone, Copy)]
pub struct Prepared<Q>(pub Q);

impl<Q, DB> QueryFragment<DB> for Prepared<Q>
where
    DB: Backend,
    Q: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

/// Keyed in the statement cache by its text (and its binds' types), never by its type
/// alone: a statement is never mistaken for another whatever its type, and a text that
/// did vary would cost a prepared statement per text, not a wrong answer.
impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();

    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}
