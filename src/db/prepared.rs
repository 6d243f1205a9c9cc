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

/// The statement cache keys a statement by its type when the type alone decides its text,
/// and by its text otherwise (raw SQL), so a statement is never mistaken for another.
impl<Q: QueryId> QueryId for Prepared<Q> {
    type QueryId = Prepared<Q::QueryId>;

    const HAS_STATIC_QUERY_ID: bool = Q::HAS_STATIC_QUERY_ID;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}
