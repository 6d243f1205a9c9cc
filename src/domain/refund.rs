//! Money going back: what a refund or dispute event tells, and how refunds and disputes
//! add up to a session's status.

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

/// `status` of a Stripe Dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeStatus {
    WarningNeedsResponse,
    WarningUnderReview,
    WarningClosed,
    NeedsResponse,
    UnderReview,
    Won,
    Lost,
    Prevented,
}

impl DisputeStatus {
    const ALL: [Self; 8] = [
        Self::WarningNeedsResponse,
        Self::WarningUnderReview,
        Self::WarningClosed,
        Self::NeedsResponse,
        Self::UnderReview,
        Self::Won,
        Self::Lost,
        Self::Prevented,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WarningNeedsResponse => "warning_needs_response",
            Self::WarningUnderReview => "warning_under_review",
            Self::WarningClosed => "warning_closed",
            Self::NeedsResponse => "needs_response",
            Self::UnderReview => "under_review",
            Self::Won => "won",
            Self::Lost => "lost",
            Self::Prevented => "prevented",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == raw)
    }

    /// Whether the dispute is still to be decided (an inquiry included): what it concerns
    /// is suspended meanwhile.
    pub fn is_open(self) -> bool {
        self.rank() == 0
    }

    /// A dispute moves forward only: open, then closed one way or the other.
    pub fn rank(self) -> u8 {
        match self {
            Self::WarningNeedsResponse
            | Self::WarningUnderReview
            | Self::NeedsResponse
            | Self::UnderReview => 0,
            Self::WarningClosed | Self::Won | Self::Lost | Self::Prevented => 1,
        }
    }
}

/// How far along the thing the news is about is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Refund(RefundStatus),
    Dispute(DisputeStatus),
}

impl Progress {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refund(status) => status.as_str(),
            Self::Dispute(status) => status.as_str(),
        }
    }

    /// Reads a stored status for news of `kind`.
    pub fn parse(kind: NewsKind, raw: &str) -> Option<Self> {
        match kind {
            NewsKind::Refund | NewsKind::Charge => RefundStatus::parse(raw).map(Self::Refund),
            NewsKind::Dispute => DisputeStatus::parse(raw).map(Self::Dispute),
        }
    }

    /// News of a lower rank than what is stored is stale.
    pub fn rank(self) -> u8 {
        match self {
            Self::Refund(status) => status.rank(),
            Self::Dispute(status) => status.rank(),
        }
    }
}

/// What the news is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewsKind {
    /// One refund (`refund.*` events): its own amount.
    Refund,
    /// A charge's whole refunded amount so far (`charge.refunded`, on API versions that
    /// send no refund events). Never added to the refunds it sums up.
    Charge,
    /// A dispute of the payment (`charge.dispute.*` events).
    Dispute,
}

impl NewsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refund => "refund",
            Self::Charge => "charge",
            Self::Dispute => "dispute",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Refund, Self::Charge, Self::Dispute]
            .into_iter()
            .find(|kind| kind.as_str() == raw)
    }
}

/// One piece of refund or dispute news, as a signed event told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalNews {
    /// The refund's id (`re_…`), the charge's (`ch_…`) for [`NewsKind::Charge`], or the
    /// dispute's (`dp_…`).
    pub id: String,
    pub kind: NewsKind,
    /// The payment intent the money came from: what finds the session.
    pub payment_intent: String,
    /// Minor units.
    pub amount: i64,
    pub status: Progress,
    /// `metadata.items`, the items the refund is for ("SKU:QTY,…"), when it names them.
    pub items: Option<String>,
    /// The event's `created`, in seconds.
    pub event_created: i64,
}

/// The SKUs a refund's `metadata.items` names ("TEE-M:1,EBOOK:1"): what it reverses.
/// Entries that are not `SKU:QTY` with a positive quantity are left out.
pub fn refunded_skus(items: &str) -> Vec<&str> {
    named_items(items).map(|(sku, _)| sku).collect()
}

/// Each `SKU:QTY` entry of `items` with a positive quantity, as written.
fn named_items(items: &str) -> impl Iterator<Item = (&str, i64)> {
    items.split(',').filter_map(|entry| {
        let (sku, quantity) = entry.trim().split_once(':')?;
        let quantity: u32 = quantity.trim().parse().ok()?;
        let sku = sku.trim();
        (quantity > 0 && !sku.is_empty()).then_some((sku, i64::from(quantity)))
    })
}

/// The SKUs a refund's `metadata.items` names with their quantities, in the order it names
/// them: a SKU named twice is named with the sum. Entries that are not `SKU:QTY` with a
/// positive quantity are left out.
pub fn refunded_items(items: &str) -> Vec<(&str, i64)> {
    let mut named: Vec<(&str, i64)> = Vec::new();
    for (sku, quantity) in named_items(items) {
        match named.iter_mut().find(|(named, _)| *named == sku) {
            Some((_, sum)) => *sum += quantity,
            None => named.push((sku, quantity)),
        }
    }
    named
}

/// The status a session of `total` that has `status` now takes from refunds of `refunded`
/// (minor units) and its disputes. A lost dispute is a full refund. An open one makes the
/// session `disputed`, unless it is refunded in full; once no dispute is open the session
/// shows its refunds again: `partially_refunded` if any refund was ever told of
/// (`ever_refunded`), even one that failed meanwhile, as it would have without the dispute.
pub fn status_after(
    status: Status,
    total: Option<i64>,
    refunded: i64,
    ever_refunded: bool,
    disputes: impl IntoIterator<Item = DisputeStatus>,
) -> Status {
    let (mut open, mut lost) = (false, false);
    for dispute in disputes {
        open |= dispute.is_open();
        lost |= dispute == DisputeStatus::Lost;
    }
    // What the refunds alone made of the session before the dispute.
    let floor = match status {
        Status::Disputed if ever_refunded => Status::PartiallyRefunded,
        Status::Disputed => Status::Fulfilled,
        status => status,
    };
    match status_after_refunds(floor, total, refunded) {
        Status::Refunded => Status::Refunded,
        _ if lost => Status::Refunded,
        _ if open => Status::Disputed,
        by_refunds => by_refunds,
    }
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
    fn an_open_dispute_suspends_a_lost_one_refunds_and_a_won_one_restores() {
        use DisputeStatus::*;
        let after = |status, refunded, disputes: &[DisputeStatus]| {
            status_after(
                status,
                Some(2500),
                refunded,
                refunded > 0,
                disputes.iter().copied(),
            )
        };
        assert_eq!(
            after(Status::Fulfilled, 0, &[NeedsResponse]),
            Status::Disputed
        );
        assert_eq!(after(Status::Disputed, 0, &[Won]), Status::Fulfilled);
        assert_eq!(
            after(Status::Disputed, 500, &[WarningClosed]),
            Status::PartiallyRefunded
        );
        assert_eq!(after(Status::Disputed, 0, &[Lost]), Status::Refunded);
        assert_eq!(
            after(Status::Fulfilled, 0, &[Won, UnderReview]),
            Status::Disputed
        );
        assert_eq!(after(Status::Refunded, 0, &[Won]), Status::Refunded);
        assert_eq!(
            after(Status::Fulfilled, 2500, &[NeedsResponse]),
            Status::Refunded
        );
        assert_eq!(
            after(Status::PartiallyRefunded, 0, &[]),
            Status::PartiallyRefunded
        );
        // A partial refund made during the dispute that failed since: shown as it would
        // have been without the dispute.
        assert_eq!(
            status_after(Status::Disputed, Some(2500), 0, true, [Won]),
            Status::PartiallyRefunded
        );
    }

    #[test]
    fn items_name_skus_with_positive_quantities() {
        assert_eq!(refunded_skus("TEE-M:1, EBOOK:2"), ["TEE-M", "EBOOK"]);
        assert_eq!(refunded_skus("TEE-M:0,:1,EBOOK,X:y,MUG:1"), ["MUG"]);
        assert!(refunded_skus("").is_empty());
        assert_eq!(
            refunded_items("TEE-M:1, EBOOK:2,TEE-M:2"),
            [("TEE-M", 3), ("EBOOK", 2)]
        );
    }
}
