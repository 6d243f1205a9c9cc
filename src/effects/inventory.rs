//! `InventoryActor`: moves stock once per (session, SKU).

use actix::{Actor, Context, Handler, ResponseFuture};

use super::{EffectError, Effected, Perform};
use crate::db::Database;

/// Applies a session's stock movements. Exactly once, whatever the retries: the movements
/// and the effect are marked applied and done in one transaction.
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

impl Handler<Perform> for InventoryActor {
    type Result = ResponseFuture<Result<Effected, EffectError>>;

    fn handle(&mut self, message: Perform, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        Box::pin(async move {
            let session_id = message.effect.session_id;
            let levels = db
                .apply_stock_movements(message.effect.id, &session_id)
                .await
                .map_err(|e| EffectError::Retry(format!("{e:#}")))?;
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
        })
    }
}
