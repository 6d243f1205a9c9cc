//! Callers queued for a turn on the connection, and the request to commit that the last
//! of them leaves behind.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Who waits for a turn, and the committer's wake-up.
#[derive(Default)]
pub(super) struct Queue {
    /// Callers waiting for a turn.
    waiting: AtomicUsize,
    /// Told when the last turn ends with nobody waiting: the open group is due.
    pub(super) commit_now: Notify,
}

impl Queue {
    /// Callers waiting for a turn now.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Counts a caller as waiting for a turn for as long as it lives, even if the caller is
/// cancelled while waiting.
pub(super) struct Waiting<'a> {
    queue: &'a Queue,
    served: bool,
}

impl<'a> Waiting<'a> {
    pub(super) fn on(queue: &'a Queue) -> Self {
        queue.waiting.fetch_add(1, Ordering::SeqCst);
        Self {
            queue,
            served: false,
        }
    }

    /// The caller has its turn: from now on it is counted as leaving (see [`Leaving`]).
    pub(super) fn served(mut self) -> Leaving<'a> {
        self.served = true;
        Leaving(self.queue)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let last = self.queue.waiting.fetch_sub(1, Ordering::SeqCst) == 1;
        // The last turn left the group for this caller to carry on, and it went away.
        if last && !self.served {
            self.queue.commit_now.notify_one();
        }
    }
}

/// Held from the moment a caller is served until its turn ends, however it ends (a
/// caller cancelled while its group is being opened included): the last caller to leave
/// asks for the group to be committed.
pub(super) struct Leaving<'a>(&'a Queue);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        // A caller that waits commits a due group itself, before it joins.
        if self.0.waiting() == 0 {
            self.0.commit_now.notify_one();
        }
    }
}
