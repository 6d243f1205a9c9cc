//! Money going back: what a refund event tells, and how refunds add up to a session's
//! status.

use super::Status;

/// `status` of a Stripe Refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    Pending,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::RequiresAction => "requires_action",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::RequiresAction,
            Self::Succeeded,
            Self::Failed,
            Self::Canceled,
        ]
        .into_iter()
        .find(|status| status.as_str() == raw)
    }

    /// Whether the money counts as refunded, and may reverse what it paid for: only once
    /// the refund succeeded. A pending refund may still be canceled, or wait on the
    /// customer, and taking access back is not undone.
    pub fn counts(self) -> bool {
        self == Self::Succeeded
    }

    /// Whether the refund failed or was canceled: the money did not go back.
    pub fn failed(self) -> bool {
        matches!(self, Self::Failed | Self::Canceled)
    }

    /// How far along the refund is. A refund moves forward only: a card refund can
    /// succeed and fail later, but never the other way round, so news of a lower rank
    /// arriving late is stale.
    pub fn rank(self) -> u8 {
        match self {
            Self::Pending | Self::RequiresAction => 0,
            Self::Succeeded => 1,
            Self::Failed | Self::Canceled => 2,
        }
    }
}

/// What the news is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundKind {
    /// One refund (`refund.*` events): its own amount.
    Refund,
    /// A charge's whole refunded amount so far (`charge.refunded`, on API versions that
    /// send no refund events). Never added to the refunds it sums up.
    Charge,
}

impl RefundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refund => "refund",
            Self::Charge => "charge",
        }
    }
}

/// One piece of refund news, as a signed event told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNews {
    /// The refund's id (`re_…`), or the charge's (`ch_…`) for [`RefundKind::Charge`].
    pub id: String,
    pub kind: RefundKind,
    /// The payment intent the money came from: what finds the session.
    pub payment_intent: String,
    /// Minor units.
    pub amount: i64,
    pub status: RefundStatus,
    /// `metadata.items`, the items the refund is for ("SKU:QTY,…"), when it names them.
    pub items: Option<String>,
    /// The event's `created`, in seconds.
    pub event_created: i64,
}

/// The SKUs a refund's `metadata.items` names ("TEE-M:1,EBOOK:1"): what it reverses.
/// Entries that are not `SKU:QTY` with a positive quantity are left out.
pub fn refunded_skus(items: &str) -> Vec<&str> {
    items
        .split(',')
        .filter_map(|entry| {
            let (sku, quantity) = entry.trim().split_once(':')?;
            let quantity: u32 = quantity.trim().parse().ok()?;
            let sku = sku.trim();
            (quantity > 0 && !sku.is_empty()).then_some(sku)
        })
        .collect()
}

/// The status refunds of `refunded` (minor units) give a session of `total` that has
/// `status` now. A session's refund status only moves forward: a refund that fails
/// later is recorded and shown, but access already taken back is not given again.
pub fn status_after_refunds(status: Status, total: Option<i64>, refunded: i64) -> Status {
    let by_amount = match total {
        Some(total) if total > 0 && refunded >= total => Status::Refunded,
        _ if refunded > 0 => Status::PartiallyRefunded,
        _ => Status::Fulfilled,
    };
    let rank = |status: Status| match status {
        Status::Refunded => 2,
        Status::PartiallyRefunded => 1,
        _ => 0,
    };
    if rank(by_amount) > rank(status) {
        by_amount
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_refunds_add_up_to_a_full_one_and_never_go_back() {
        let after = |status, refunded| status_after_refunds(status, Some(2500), refunded);
        assert_eq!(after(Status::Fulfilled, 0), Status::Fulfilled);
        assert_eq!(after(Status::Fulfilled, 1), Status::PartiallyRefunded);
        assert_eq!(after(Status::Fulfilled, 2499), Status::PartiallyRefunded);
        assert_eq!(after(Status::Fulfilled, 2500), Status::Refunded);
        assert_eq!(after(Status::Refunded, 0), Status::Refunded);
        assert_eq!(
            after(Status::PartiallyRefunded, 0),
            Status::PartiallyRefunded
        );
        // A free order refunded nothing is not refunded.
        assert_eq!(
            status_after_refunds(Status::Fulfilled, Some(0), 0),
            Status::Fulfilled
        );
    }

    #[test]
    fn items_name_skus_with_positive_quantities() {
        assert_eq!(refunded_skus("TEE-M:1, EBOOK:2"), ["TEE-M", "EBOOK"]);
        assert_eq!(refunded_skus("TEE-M:0,:1,EBOOK,X:y,MUG:1"), ["MUG"]);
        assert!(refunded_skus("").is_empty());
    }
}
