//! The operators signed in to `/admin`: one row per sign-in, so that signing out, or a
//! new `ADMIN_TOKEN`, ends it on every replica at once.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::admin_sessions;
use super::{Database, now_ms, with_connection};

impl Database {
    /// Stores sign-in `id` (the digest of its cookie's value), made with the token whose
    /// digest is `token`, with the CSRF token of its forms, until `expires_at` (ms since
    /// the epoch). Sign-ins that expired, or were made with another token, are forgotten
    /// on the way.
    pub async fn store_admin_session(
        &self,
        id: &str,
        token: &str,
        csrf: &str,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                diesel::delete(
                    admin_sessions::table.filter(
                        admin_sessions::expires_at
                            .le(now)
                            .or(admin_sessions::token.ne(token)),
                    ),
                )
                .execute(conn)
                .await?;
                diesel::insert_into(admin_sessions::table)
                    .values((
                        admin_sessions::id.eq(id),
                        admin_sessions::token.eq(token),
                        admin_sessions::csrf.eq(csrf),
                        admin_sessions::expires_at.eq(expires_at),
                        admin_sessions::created_at.eq(now),
                    ))
                    .execute(conn)
                    .await
            })
            .await
            .context("could not store the sign-in")
        })?;
        Ok(())
    }

    /// The CSRF token of sign-in `id`, if it is stored, was made with the token whose
    /// digest is `token`, and has not expired.
    pub async fn admin_session(&self, id: &str, token: &str) -> anyhow::Result<Option<String>> {
        let now = now_ms();
        with_connection!(self, |conn| {
            admin_sessions::table
                .find(id)
                .filter(admin_sessions::token.eq(token))
                .filter(admin_sessions::expires_at.gt(now))
                .select(admin_sessions::csrf)
                .first::<String>(conn)
                .await
                .optional()
                .context("could not read the sign-in")
        })
    }

    /// Ends sign-in `id`, on every replica.
    pub async fn end_admin_session(&self, id: &str) -> anyhow::Result<()> {
        with_connection!(self, |conn| {
            diesel::delete(admin_sessions::table.find(id))
                .execute(conn)
                .await
                .context("could not end the sign-in")
        })?;
        Ok(())
    }

    /// Forgets the sign-ins that expired; returns how many.
    pub async fn forget_expired_admin_sessions(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        with_connection!(self, |conn| {
            diesel::delete(admin_sessions::table.filter(admin_sessions::expires_at.le(now)))
                .execute(conn)
                .await
                .context("could not forget expired sign-ins")
        })
    }
}
