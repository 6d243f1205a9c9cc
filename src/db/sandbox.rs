//! Sandbox mode's key, kept in the database it serves from.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::sandbox_keys;
use super::{Database, with_connection};

impl Database {
    /// The simulated Stripe's API key for this database: `candidate` if none was made
    /// before, the one made before otherwise. Every process on the database agrees.
    pub async fn sandbox_key(&self, candidate: &str) -> anyhow::Result<String> {
        with_connection!(self, |conn| {
            conn.transaction(async |conn| {
                diesel::insert_into(sandbox_keys::table)
                    .values((sandbox_keys::id.eq(1), sandbox_keys::api_key.eq(candidate)))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                sandbox_keys::table
                    .select(sandbox_keys::api_key)
                    .first::<String>(conn)
                    .await
            })
            .await
            .context("could not keep the sandbox's key")
        })
    }
}
