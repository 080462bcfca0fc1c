//! Group commit: one `take` in flight per counter and worker.
//!
//! Requests that arrive while a `take` is in flight wait in a queue and go
//! together in the next one, so a busy counter costs one round trip per batch
//! rather than per request, and tickets still go to requests in arrival order.
//!
//! The edge drives a [`KeyQueue`]:
//!
//! 1. [`KeyQueue::push`] each request; on [`Push::SendNow`] call
//!    [`KeyQueue::start_batch`] (now, or a little later to gather more: the
//!    edge waits for the event loop's next turn) and send a `take` for the
//!    returned requests, in order.
//! 2. On the reply, pair [`KeyQueue::in_flight`] with the outcomes (skipping
//!    requests no longer `live`), then [`KeyQueue::finish`]; if it returns
//!    true, start the next batch.
//! 3. [`KeyQueue::forget`] a request nginx ended; [`KeyQueue::fail_all`] when
//!    the connection breaks.
//!
//! Ids are the edge's; they must be unique within a queue.

use std::collections::VecDeque;

use super::scripts::{MAX_REQUEST_COUNT, MAX_TAKE_REQUESTS};

/// Most requests in one `take`; the rest wait for the next.
pub const MAX_BATCH_REQUESTS: usize = 512;
/// Most requests waiting for one counter; more are refused (the edge answers
/// 503), so a stalled Redis cannot make a worker hoard requests.
pub const MAX_QUEUED_REQUESTS: usize = 16 * 1024;

const _: () = assert!(MAX_BATCH_REQUESTS <= MAX_TAKE_REQUESTS);

/// A request in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub id: u64,
    /// Tickets wanted.
    pub count: u64,
    /// False once forgotten: its tickets become a gap, handed to no one.
    pub live: bool,
}

/// What [`KeyQueue::push`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Nothing is in flight: call [`KeyQueue::start_batch`] and send.
    SendNow,
    /// Queued behind the batch in flight (or about to be sent).
    Queued,
    /// Refused: [`MAX_QUEUED_REQUESTS`] are already waiting.
    Full,
    /// Refused: 0 or more than [`MAX_REQUEST_COUNT`] tickets.
    BadCount,
}

/// Where [`KeyQueue::forget`] found a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgotten {
    /// Removed before it was sent.
    Queued,
    /// Its batch is in flight; whatever it is granted is never handed out.
    InFlight,
    /// Not here (already answered or failed).
    Unknown,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Idle,
    /// [`Push::SendNow`] or `finish() == true` was returned; `start_batch`
    /// has not been called yet.
    SendPending,
    InFlight,
}

/// The requests of one counter in one worker.
#[derive(Debug, Default)]
pub struct KeyQueue {
    queued: VecDeque<Pending>,
    in_flight: Vec<Pending>,
    state: State,
}

impl KeyQueue {
    pub fn new() -> Self {
        KeyQueue::default()
    }

    /// Adds a request for `count` tickets.
    pub fn push(&mut self, id: u64, count: u64) -> Push {
        if count == 0 || count > MAX_REQUEST_COUNT {
            return Push::BadCount;
        }
        if self.queued.len() >= MAX_QUEUED_REQUESTS {
            return Push::Full;
        }
        self.queued.push_back(Pending {
            id,
            count,
            live: true,
        });
        if self.state == State::Idle {
            self.state = State::SendPending;
            Push::SendNow
        } else {
            Push::Queued
        }
    }

    /// Moves the oldest queued requests (at most [`MAX_BATCH_REQUESTS`]) into
    /// flight and returns them in arrival order. `None` if a batch is already
    /// in flight or nothing is queued.
    pub fn start_batch(&mut self) -> Option<&[Pending]> {
        if self.state == State::InFlight {
            return None;
        }
        self.in_flight.clear();
        let take = self.queued.len().min(MAX_BATCH_REQUESTS);
        self.in_flight.extend(self.queued.drain(..take));
        if self.in_flight.is_empty() {
            self.state = State::Idle;
            return None;
        }
        self.state = State::InFlight;
        Some(&self.in_flight)
    }

    /// The batch in flight, in the order it was sent (empty if none).
    pub fn in_flight(&self) -> &[Pending] {
        if self.state == State::InFlight {
            &self.in_flight
        } else {
            &[]
        }
    }

    /// Ends the batch in flight once its reply (or error) was handed out.
    /// Returns true if requests are waiting: call `start_batch` and send.
    pub fn finish(&mut self) -> bool {
        if self.state != State::InFlight {
            return false;
        }
        self.in_flight.clear();
        if self.queued.is_empty() {
            self.state = State::Idle;
            false
        } else {
            self.state = State::SendPending;
            true
        }
    }

    /// Drops a request nginx ended (client gone, timeout).
    pub fn forget(&mut self, id: u64) -> Forgotten {
        if self.state == State::InFlight {
            if let Some(pending) = self.in_flight.iter_mut().find(|p| p.id == id && p.live) {
                pending.live = false;
                return Forgotten::InFlight;
            }
        }
        match self.queued.iter().position(|p| p.id == id) {
            Some(at) => {
                self.queued.remove(at);
                Forgotten::Queued
            }
            None => Forgotten::Unknown,
        }
    }

    /// The connection broke: every live request in flight and every queued
    /// one fails. Yields their ids (in flight first, then queued, each in
    /// arrival order); the queue is empty and idle afterwards, even if the
    /// iterator is dropped early.
    pub fn fail_all(&mut self) -> impl Iterator<Item = u64> + '_ {
        self.state = State::Idle;
        self.in_flight
            .drain(..)
            .filter(|p| p.live)
            .map(|p| p.id)
            .chain(self.queued.drain(..).map(|p| p.id))
    }

    /// Nothing in flight, queued or about to be sent: the queue may be freed.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle && self.queued.is_empty()
    }

    /// Requests waiting for a later batch.
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(batch: &[Pending]) -> Vec<u64> {
        batch.iter().map(|p| p.id).collect()
    }

    #[test]
    fn first_request_sends_the_rest_wait() {
        let mut q = KeyQueue::new();
        assert!(q.is_idle());
        assert_eq!(q.push(1, 1), Push::SendNow);
        // Not sent yet: later arrivals join the same batch.
        assert_eq!(q.push(2, 3), Push::Queued);
        assert_eq!(ids(q.start_batch().unwrap()), [1, 2]);
        assert_eq!(q.start_batch(), None, "one batch in flight at a time");
        assert_eq!(q.push(3, 1), Push::Queued);
        assert_eq!(q.push(4, 1), Push::Queued);
        assert_eq!(ids(q.in_flight()), [1, 2]);
        assert!(q.finish());
        assert_eq!(
            q.push(5, 1),
            Push::Queued,
            "the next batch is about to be sent"
        );
        assert_eq!(ids(q.start_batch().unwrap()), [3, 4, 5]);
        assert!(!q.finish());
        assert!(q.is_idle());
        assert_eq!(q.in_flight(), []);
        assert!(!q.finish(), "nothing in flight");
        assert_eq!(q.push(6, 1), Push::SendNow);
    }

    #[test]
    fn batches_are_capped() {
        let mut q = KeyQueue::new();
        for id in 0..(MAX_BATCH_REQUESTS as u64 + 10) {
            q.push(id, 1);
        }
        let batch = q.start_batch().unwrap();
        assert_eq!(batch.len(), MAX_BATCH_REQUESTS);
        assert_eq!(batch[0].id, 0);
        assert_eq!(q.queued_len(), 10);
        assert!(q.finish());
        assert_eq!(q.start_batch().unwrap().len(), 10);
    }

    #[test]
    fn bounds() {
        let mut q = KeyQueue::new();
        assert_eq!(q.push(1, 0), Push::BadCount);
        assert_eq!(q.push(1, MAX_REQUEST_COUNT + 1), Push::BadCount);
        assert!(q.is_idle());
        for id in 0..MAX_QUEUED_REQUESTS as u64 {
            assert_ne!(q.push(id, MAX_REQUEST_COUNT), Push::Full);
        }
        assert_eq!(q.push(u64::MAX, 1), Push::Full);
    }

    #[test]
    fn forget_queued_and_in_flight() {
        let mut q = KeyQueue::new();
        q.push(1, 1);
        q.push(2, 1);
        q.start_batch();
        q.push(3, 1);
        q.push(4, 1);
        assert_eq!(q.forget(2), Forgotten::InFlight);
        assert_eq!(q.forget(2), Forgotten::Unknown);
        assert_eq!(q.forget(3), Forgotten::Queued);
        assert_eq!(q.forget(9), Forgotten::Unknown);
        let live: Vec<_> = q.in_flight().iter().map(|p| (p.id, p.live)).collect();
        assert_eq!(live, [(1, true), (2, false)]);
        assert!(q.finish());
        assert_eq!(ids(q.start_batch().unwrap()), [4]);
        assert!(!q.finish());
    }

    #[test]
    fn forgetting_everything_queued_leaves_nothing_to_send() {
        let mut q = KeyQueue::new();
        assert_eq!(q.push(1, 1), Push::SendNow);
        assert_eq!(q.forget(1), Forgotten::Queued);
        assert_eq!(q.start_batch(), None);
        assert!(q.is_idle());
        assert_eq!(q.push(2, 1), Push::SendNow);
    }

    #[test]
    fn fail_all_empties_the_queue() {
        let mut q = KeyQueue::new();
        for id in 1..=3 {
            q.push(id, 1);
        }
        q.start_batch();
        q.push(4, 1);
        q.push(5, 1);
        q.forget(2);
        assert_eq!(q.fail_all().collect::<Vec<_>>(), [1, 3, 4, 5]);
        assert!(q.is_idle());
        assert_eq!(q.in_flight(), []);
        // Dropping the iterator early still empties the queue.
        q.push(6, 1);
        q.start_batch();
        q.push(7, 1);
        assert_eq!(q.fail_all().next(), Some(6));
        assert!(q.is_idle());
        assert_eq!(q.push(8, 1), Push::SendNow);
    }

    /// Drives the queue against a model counter with random arrivals,
    /// forgets and replies: live requests get tickets in arrival order and no
    /// ticket goes to two requests.
    #[test]
    fn tickets_follow_arrival_order() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut q = KeyQueue::new();
        let mut counter = 0u64;
        let mut next_id = 0u64;
        let mut forgotten = Vec::new();
        let mut answered: Vec<(u64, u64, u64)> = Vec::new();
        let mut send = false;
        for _ in 0..20_000 {
            match random(4) {
                0 | 1 => {
                    next_id += 1;
                    if q.push(next_id, 1 + random(3)) == Push::SendNow {
                        send = true;
                    }
                }
                2 if next_id > 0 => {
                    let id = 1 + random(next_id);
                    if q.forget(id) != Forgotten::Unknown {
                        forgotten.push(id);
                    }
                }
                _ => {
                    if send {
                        q.start_batch();
                        send = false;
                    } else if !q.in_flight().is_empty() {
                        // The model Redis: grants every request in order.
                        for p in q.in_flight() {
                            if p.live {
                                answered.push((p.id, counter + 1, p.count));
                            }
                            counter += p.count;
                        }
                        send = q.finish();
                    }
                }
            }
        }
        let mut last_id = 0;
        let mut last_ticket = 0;
        for &(id, first, count) in &answered {
            assert!(id > last_id, "arrival order");
            assert!(first > last_ticket, "no ticket twice, ascending");
            assert!(!forgotten.contains(&id));
            last_id = id;
            last_ticket = first + count - 1;
        }
        assert!(answered.len() > 1000);
    }
}
