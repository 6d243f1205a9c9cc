//! The stored event an attempt carries out, and whether its record marked it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A stored event an attempt carries out. The attempt's record marks it processed in its
/// own transaction and says so here, so that the event's worker need not mark it again.
#[derive(Debug)]
pub struct CarriedEvent {
    id: String,
    marked: AtomicBool,
}

impl CarriedEvent {
    pub fn new(id: &str) -> Arc<Self> {
        Arc::new(Self {
            id: id.to_owned(),
            marked: AtomicBool::new(false),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Said by the attempt once its record, which marked the event, is committed.
    pub(super) fn mark(&self) {
        self.marked.store(true, Ordering::Release);
    }

    /// Whether a record marked the event processed.
    pub fn marked(&self) -> bool {
        self.marked.load(Ordering::Acquire)
    }
}
