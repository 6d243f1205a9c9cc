//! Grants as a download server asks about them, and the key links are signed with.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::{access_grants, secrets};
use super::{Database, now_ms, with_connection};
use crate::domain::GrantStatus;

impl Database {
    /// Where the grant of `sku` to session `session_id` stands; `None` if there is none.
    pub async fn grant_status(
        &self,
        session_id: &str,
        sku: &str,
    ) -> anyhow::Result<Option<GrantStatus>> {
        let grant = with_connection!(self, |conn| {
            access_grants::table
                .find((session_id, sku))
                .select((access_grants::revoked_at, access_grants::suspended_at))
                .first::<(Option<i64>, Option<i64>)>(conn)
                .await
                .optional()
                .context("could not read the grant")
        })?;
        Ok(grant.map(|(revoked, suspended)| GrantStatus::of(revoked, suspended)))
    }

    /// The secret named `name` that every replica on this database shares, made (from
    /// the operating system's randomness) by whichever asks first.
    pub async fn shared_secret(&self, name: &str) -> anyhow::Result<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let fresh = hex::encode(bytes);
        with_connection!(self, |conn| {
            diesel::insert_into(secrets::table)
                .values((
                    secrets::name.eq(name),
                    secrets::value.eq(&fresh),
                    secrets::created_at.eq(now_ms()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .context("could not keep the secret")?;
            secrets::table
                .find(name)
                .select(secrets::value)
                .first::<String>(conn)
                .await
                .context("could not read the secret")
        })
    }
}
