//! Recording a session's status: the claim, and everything a fulfillment writes with it.

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

mod rows;
mod whole;

use self::rows::{EffectRow, GrantRow, MovementRow, SendWrites, SessionRow, ShipmentRow, Write};
use self::whole::{RecordWhole, Whole};
use super::outcomes::{LineItemRow, ReadOutcome, StoredOutcome, StoredSession};
use super::refunds::apply_reversals;
use super::reservations::settled_state;
use super::schema::checkout_sessions;
use super::types::DbNow;
use super::{Database, now_ms, with_connection};
use crate::catalog::Plan;
use crate::domain::{
    AccessChange, AccountId, EffectKind, EffectStatus, LineItem, Outcome, SessionSummary,
    ShipmentStatus, Status, Tell,
};

/// A status to record for a session, with what was learnt about it.
pub struct Record<'a> {
    pub summary: &'a SessionSummary,
    pub status: Status,
    /// Written when the record fulfills the session or awaits its payment.
    pub line_items: &'a [LineItem],
    /// What the fulfillment does beyond recording, from the catalog.
    pub plan: &'a Plan,
    /// Who is told of a fulfilment: the customer by fulfilld's own receipt
    /// (`SEND_RECEIPTS`), the merchant's access system of its grants.
    pub tell: Tell,
    /// Recorded `fulfilled` without being fulfilled, as it was fulfilled elsewhere before
    /// fulfilld knew of it: its line items are written, so refunds and disputes apply to
    /// it, but nothing of a fulfilment (no `fulfilled_at`, stock movement, grant, shipment,
    /// receipt or notice).
    pub elsewhere: bool,
    /// The stored event this record carries out: marked processed in the same
    /// transaction, so a fulfilment costs one commit.
    pub event: Option<&'a str>,
    /// The trace the effects it enqueues continue (a W3C `traceparent`).
    pub trace: Option<&'a str>,
}

impl Record<'_> {
    /// The effects this record enqueues when it makes its transition.
    fn effects(&self) -> Vec<EffectKind> {
        let has_email = self.summary.customer_email.is_some();
        match self.status {
            Status::Fulfilled if self.elsewhere => Vec::new(),
            Status::Fulfilled => {
                let mut kinds = Vec::new();
                if self.tell.customer && has_email {
                    kinds.push(EffectKind::Receipt);
                }
                if self.tell.access && !self.plan.grants.is_empty() {
                    kinds.push(EffectKind::AccessNotice);
                }
                if !self.plan.physical.is_empty() {
                    kinds.push(EffectKind::Inventory);
                    if self.summary.shipping_address.is_some() {
                        kinds.push(EffectKind::Shipment);
                    }
                }
                kinds
            }
            Status::PaymentFailed if has_email => vec![EffectKind::PaymentFailedEmail],
            // Refunds are applied to a recorded session, never recorded as a fulfilment.
            Status::PaymentFailed
            | Status::AwaitingPayment
            | Status::Expired
            | Status::Refunded
            | Status::PartiallyRefunded
            | Status::Disputed => Vec::new(),
        }
    }
}

/// The result of [`Database::record`].
#[derive(Debug)]
pub struct Recorded {
    /// The session's outcome as stored after the transaction.
    pub outcome: Outcome,
    /// True when this call made the transition (and enqueued its effects); false when the
    /// session already had this or a terminal status, recorded by this or another process.
    pub claimed: bool,
    /// How many effects the transition enqueued.
    pub effects: usize,
}

impl Database {
    /// Records `record.status` for a session in one transaction, if the session has no
    /// status yet or is awaiting payment. The claim is the primary key (insert, or
    /// update from `awaiting_payment` only), so of several processes racing, exactly one
    /// makes each transition; a fulfillment writes its line items, stock movements,
    /// access grants, shipment and effects in the same transaction.
    pub async fn record(&self, record: Record<'_>) -> anyhow::Result<Recorded> {
        let now = now_ms();
        let summary = record.summary;
        let status = record.status;
        let id = summary.id.as_str();
        let shipping_address = summary
            .shipping_address
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let row = SessionRow {
            id,
            status,
            livemode: summary.livemode,
            currency: summary.currency.as_deref(),
            amount_total: summary.amount_total,
            customer_email: summary.customer_email.as_deref(),
            shipping_address,
            fulfilled_at: (status == Status::Fulfilled && !record.elsewhere).then_some(now),
            created_at: now,
            updated_at: now,
            account: summary.account.as_ref().map(AccountId::as_str),
            payment_intent: summary.payment_intent.as_deref(),
        };
        let items = LineItemRow::for_session(id, record.line_items);
        let nothing = Plan::default();
        let plan = if record.elsewhere {
            &nothing
        } else {
            record.plan
        };
        let movements: Vec<_> = plan
            .physical
            .iter()
            .map(|item| MovementRow {
                session_id: id,
                sku: &item.sku,
                quantity: item.quantity,
                applied_at: None,
                created_at: now,
            })
            .collect();
        let grants: Vec<_> = plan
            .grants
            .iter()
            .map(|grant| GrantRow {
                session_id: id,
                sku: &grant.sku,
                name: &grant.name,
                url: &grant.url,
                created_at: now,
            })
            .collect();
        let shipment = (!plan.physical.is_empty())
            .then(|| -> anyhow::Result<_> {
                // Without an address nobody can be told where to ship: an operator must.
                let status = match summary.shipping_address {
                    Some(_) => ShipmentStatus::Pending,
                    None => ShipmentStatus::AwaitingManualHandling,
                };
                Ok(ShipmentRow {
                    session_id: id,
                    status,
                    items: serde_json::to_string(&plan.physical)?,
                    created_at: now,
                    updated_at: now,
                })
            })
            .transpose()?;
        let effect_kinds = record.effects();
        // The merchant's access system is told of the grants with the fulfilment.
        let granted = effect_kinds.contains(&EffectKind::AccessNotice).then(|| {
            let skus: Vec<String> = plan.grants.iter().map(|g| g.sku.clone()).collect();
            AccessChange::Granted.notice(id, &skus, summary.customer_email.as_deref(), now)
        });
        let granted = granted.transpose()?;
        let effects: Vec<_> = effect_kinds
            .iter()
            .map(|kind| EffectRow {
                session_id: id,
                kind: *kind,
                subject: match (kind, &granted) {
                    (EffectKind::AccessNotice, Some((subject, _))) => subject,
                    _ => "",
                },
                body: match (kind, &granted) {
                    (EffectKind::AccessNotice, Some((_, body))) => Some(body),
                    _ => None,
                },
                status: EffectStatus::Pending,
                attempts: 0,
                next_attempt_at: DbNow::now(),
                created_at: now,
                updated_at: now,
                traceparent: record.trace,
            })
            .collect();
        // What the record writes once it holds its claim, the stored event aside.
        let mut on_claim = Vec::new();
        if matches!(status, Status::Fulfilled | Status::AwaitingPayment) {
            on_claim.extend(items.iter().map(Write::LineItem));
        }
        if status == Status::Fulfilled {
            on_claim.extend(movements.iter().map(Write::Movement));
            on_claim.extend(grants.iter().map(Write::Grant));
            on_claim.extend(shipment.iter().map(Write::Shipment));
        }
        on_claim.extend(effects.iter().map(Write::Effect));
        if let Some(state) = settled_state(status) {
            on_claim.push(Write::Reservations {
                session: id,
                state,
                now,
            });
        }
        // A refund stored already applies now, with the fulfilment it reverses: one stored
        // while the payment was clearing, or one whose own attempt stopped before it
        // applied it.
        let fulfils = (status == Status::Fulfilled)
            .then_some(row.payment_intent)
            .flatten();
        let whole = Whole {
            row: &row,
            writes: &on_claim,
            event: record.event,
            fulfils,
        };
        with_connection!(self, |conn| {
            async {
                if conn.record_whole(&whole).await? {
                    return Ok(Recorded {
                        outcome: written(&row, &items, &grants, shipment.as_ref())
                            .into_outcome()?,
                        claimed: true,
                        effects: effects.len(),
                    });
                }
                conn.transaction(async |conn| {
                    let inserted = diesel::insert_into(checkout_sessions::table)
                        .values(&row)
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?
                        == 1;
                    let mut claimed = inserted;
                    if !claimed && status != Status::AwaitingPayment {
                        claimed = diesel::update(
                            checkout_sessions::table
                                .find(id)
                                .filter(checkout_sessions::status.eq(Status::AwaitingPayment)),
                        )
                        .set((
                            checkout_sessions::status.eq(row.status),
                            checkout_sessions::currency.eq(row.currency),
                            checkout_sessions::amount_total.eq(row.amount_total),
                            checkout_sessions::customer_email.eq(row.customer_email),
                            checkout_sessions::shipping_address.eq(&row.shipping_address),
                            checkout_sessions::fulfilled_at.eq(row.fulfilled_at),
                            checkout_sessions::updated_at.eq(now),
                            // A payment intent already known is kept when this summary has
                            // none.
                            row.payment_intent
                                .map(|known| checkout_sessions::payment_intent.eq(known)),
                        ))
                        .execute(conn)
                        .await?
                            == 1;
                    }
                    let mut writes = if claimed {
                        on_claim.clone()
                    } else {
                        Vec::new()
                    };
                    if let Some(event) = record.event {
                        writes.push(Write::Processed { event, now });
                    }
                    let fulfils = fulfils.filter(|_| claimed);
                    let refunds_stored = conn.send(&writes, fulfils).await?;
                    let mut reversed = false;
                    if refunds_stored && let Some(payment_intent) = fulfils {
                        let applied = apply_reversals!(conn, id, payment_intent, record.tell, now)?;
                        reversed = applied.is_some_and(|applied| applied.enqueued);
                    }
                    // A session whose row this record made holds only what it wrote,
                    // unless stored refunds were applied to it: no need to read that back.
                    let stored = if inserted && !refunds_stored {
                        written(&row, &items, &grants, shipment.as_ref())
                    } else {
                        conn.read_outcome(id)
                            .await?
                            .context("the session vanished inside its own transaction")?
                    };
                    let outcome = stored.into_outcome()?;
                    Ok::<_, anyhow::Error>(Recorded {
                        outcome,
                        claimed,
                        effects: if claimed { effects.len() } else { 0 } + usize::from(reversed),
                    })
                })
                .await
            }
            .await
            .context("could not record the session")
        })
    }
}

/// What reading a session back right after the record that made its row finds: the row,
/// and the line items, grants and shipment written with it.
fn written(
    row: &SessionRow<'_>,
    items: &[LineItemRow],
    grants: &[GrantRow<'_>],
    shipment: Option<&ShipmentRow<'_>>,
) -> StoredOutcome {
    let fulfilled = row.status == Status::Fulfilled;
    let with_items = matches!(row.status, Status::Fulfilled | Status::AwaitingPayment);
    StoredOutcome {
        session: StoredSession {
            id: row.id.to_owned(),
            status: row.status,
            livemode: row.livemode,
            currency: row.currency.map(str::to_owned),
            amount_total: row.amount_total,
            shipping_address: row.shipping_address.clone(),
            fulfilled_at: row.fulfilled_at,
            account: row.account.map(str::to_owned),
            amount_refunded: 0,
            customer_email: row.customer_email.map(str::to_owned),
        },
        items: if with_items {
            items.to_vec()
        } else {
            Vec::new()
        },
        grants: if fulfilled {
            grants
                .iter()
                .map(|grant| {
                    let (sku, name, url) = (grant.sku, grant.name, grant.url);
                    (sku.to_owned(), name.to_owned(), url.to_owned(), None, None)
                })
                .collect()
        } else {
            Vec::new()
        },
        shipment: shipment
            .filter(|_| fulfilled)
            .map(|shipment| (shipment.status, shipment.items.clone())),
    }
}

#[cfg(test)]
mod tests;
