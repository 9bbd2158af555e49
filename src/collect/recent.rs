//! The events this collector accepted lately, by identifier, so that the
//! profile API ([`crate::console`]) counts a visitor's latest action
//! before any refresh folds it into `cdp.profiles`. Bounded: the oldest
//! events go first once [`Recent::CAPACITY`] are held; the API asks only
//! for those received after the profile's last refresh.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use super::message::Event;

/// One accepted event as the profile API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecentEvent {
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub event: Option<String>,
    pub name: Option<String>,
    /// Microseconds since the epoch.
    pub timestamp: i64,
    pub received_at: i64,
    /// Its identifiers, `(type, value as sent)`.
    #[serde(skip)]
    pub identifiers: Vec<(&'static str, String)>,
}

/// Recently accepted events, oldest first, and where each identifier's are.
#[derive(Debug, Default)]
pub struct Recent {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Events with their sequence number.
    events: VecDeque<(u64, RecentEvent)>,
    /// Sequence number of the first event held.
    first: u64,
    /// Identifier value (lower-cased) → sequence numbers of its events.
    by_identifier: HashMap<String, Vec<u64>>,
}

impl Recent {
    /// Events held at most (about 50 MB of small events).
    pub const CAPACITY: usize = 200_000;

    /// Hold `event` (accepted and in the write-ahead log).
    pub fn push(&self, event: &Event) {
        let identifiers: Vec<(&'static str, String)> = [
            ("anonymous_id", &event.anonymous_id),
            ("anonymous_id", &event.previous_id),
            ("user_id", &event.user_id),
            ("email", &event.email),
        ]
        .into_iter()
        .filter_map(|(t, v)| v.as_ref().map(|v| (t, v.clone())))
        .collect();
        if identifiers.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.events.len() >= Self::CAPACITY {
            inner.evict_oldest();
        }
        let seq = inner.first + inner.events.len() as u64;
        for (_, value) in &identifiers {
            let key = value.trim().to_lowercase();
            inner.by_identifier.entry(key).or_default().push(seq);
        }
        inner.events.push_back((
            seq,
            RecentEvent {
                message_id: event.message_id.clone(),
                kind: event.kind.clone(),
                event: event.event.clone(),
                name: event.name.clone(),
                timestamp: event.timestamp,
                received_at: event.received_at,
                identifiers,
            },
        ));
    }

    /// The events carrying one of `values` (identifier values, any case)
    /// received after `after` (microseconds), oldest first.
    pub fn of(&self, values: &[String], after: i64) -> Vec<RecentEvent> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut seqs: Vec<u64> = values
            .iter()
            .filter_map(|v| inner.by_identifier.get(&v.trim().to_lowercase()))
            .flatten()
            .copied()
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs.into_iter()
            .filter_map(|s| s.checked_sub(inner.first))
            .filter_map(|i| inner.events.get(i as usize))
            .map(|(_, e)| e)
            .filter(|e| e.received_at > after)
            .cloned()
            .collect()
    }

    /// How many events are held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn evict_oldest(&mut self) {
        let Some((seq, event)) = self.events.pop_front() else {
            return;
        };
        self.first = seq + 1;
        for (_, value) in &event.identifiers {
            let key = value.trim().to_lowercase();
            if let Some(seqs) = self.by_identifier.get_mut(&key) {
                seqs.retain(|s| *s != seq);
                if seqs.is_empty() {
                    self.by_identifier.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, anonymous: &str, received_at: i64) -> Event {
        Event {
            message_id: id.into(),
            kind: "track".into(),
            event: Some("Viewed".into()),
            anonymous_id: Some(anonymous.into()),
            timestamp: received_at,
            received_at,
            ..Event::default()
        }
    }

    #[test]
    fn events_are_found_by_any_identifier_after_a_time_and_the_oldest_go_first() {
        let recent = Recent::default();
        recent.push(&event("m1", "Cookie-A", 10));
        recent.push(&event("m2", "cookie-b", 20));
        recent.push(&event("m3", "cookie-a", 30));
        let ids = |v: Vec<RecentEvent>| v.into_iter().map(|e| e.message_id).collect::<Vec<_>>();
        assert_eq!(ids(recent.of(&["COOKIE-A".into()], 0)), ["m1", "m3"]);
        assert_eq!(ids(recent.of(&["cookie-a".into()], 10)), ["m3"]);
        assert!(recent.of(&["cookie-z".into()], 0).is_empty());
        let mut inner = recent.inner.lock().unwrap();
        inner.evict_oldest();
        drop(inner);
        assert_eq!(ids(recent.of(&["cookie-a".into()], 0)), ["m3"]);
        assert_eq!(recent.len(), 2);
    }
}
