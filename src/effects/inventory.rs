//! `InventoryActor`: moves stock once per (session, SKU).

use actix::{Actor, Context, Handler, ResponseFuture};
use tracing::Instrument;

use super::{EffectError, Effected, MoveStock};
use crate::db::Database;

/// Applies a session's stock movements. Exactly once, whatever the retries and however
/// many attempts overlap: the movements are claimed (`applied_at IS NULL`) and the effect
/// marked done, under the attempt's fence, in the transaction that moves the stock.
pub struct InventoryActor {
    db: Database,
}

impl InventoryActor {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

impl Actor for InventoryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl Handler<MoveStock> for InventoryActor {
    type Result = ResponseFuture<Result<Effected, EffectError>>;

    fn handle(&mut self, MoveStock(attempt): MoveStock, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        let span = attempt.span.clone();
        let moved = async move {
            let session_id = &attempt.effect.session_id;
            // Database work is never cut short (see the module doc of `effects`): the
            // transaction itself gives up waiting for a row lock in time.
            let levels = db
                .apply_stock_movements(attempt.fence(), session_id, attempt.lock_wait())
                .await
                .map_err(|e| EffectError::Retry(format!("{e:#}")))?
                .ok_or(EffectError::Superseded)?;
            for level in levels {
                if level.stock < 0 {
                    tracing::warn!(
                        session.id = %session_id,
                        sku = %level.sku,
                        stock = level.stock,
                        "SKU oversold: the customer has paid, so the order stands; restock or contact them"
                    );
                } else {
                    tracing::debug!(session.id = %session_id, sku = %level.sku, stock = level.stock, "stock moved");
                }
            }
            Ok(Effected::Recorded)
        };
        Box::pin(moved.instrument(span))
    }
}
