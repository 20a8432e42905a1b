//! Topics: which connections are subscribed to what. Publishing is the driver's: a
//! message is framed once and every subscriber's output queue shares it.
//!
//! A subscription costs an entry in its topic's member slab and one in its
//! connection's list; a connection with none costs nothing here.

use slab::Slab;
use std::collections::HashMap;
use std::sync::Arc;

/// A topic appearing or disappearing in this process (for a bridge to other
/// processes, which need only know the topics somebody here listens to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// The first local subscriber arrived.
    Added(Arc<str>),
    /// The last local subscriber left.
    Removed(Arc<str>),
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    TooMany,
}

struct Topic {
    name: Arc<str>,
    /// Subscribed connections, by slot key.
    members: Slab<u32>,
}

#[derive(Default)]
pub(crate) struct Topics {
    by_name: HashMap<Arc<str>, usize>,
    topics: Slab<Topic>,
    /// Per connection slot: (topic, member index) of each of its subscriptions.
    by_conn: HashMap<u32, Vec<(u32, u32)>>,
}

impl Topics {
    /// Subscribes the connection in slot `key` to `name` (again is a no-op). Refused
    /// when it already has `limit` subscriptions.
    pub(crate) fn subscribe(
        &mut self,
        key: u32,
        name: &str,
        limit: usize,
        changes: &mut Vec<Change>,
    ) -> Result<(), Refused> {
        let subs = self.by_conn.get(&key).map_or(&[][..], Vec::as_slice);
        let existing = self.by_name.get(name).copied();
        if let Some(t) = existing
            && subs.iter().any(|&(topic, _)| topic as usize == t)
        {
            return Ok(());
        }
        if subs.len() >= limit {
            return Err(Refused::TooMany);
        }
        let t = match existing {
            Some(t) => t,
            None => {
                let name: Arc<str> = Arc::from(name);
                let t = self.topics.insert(Topic {
                    name: name.clone(),
                    members: Slab::new(),
                });
                self.by_name.insert(name.clone(), t);
                changes.push(Change::Added(name));
                t
            }
        };
        let member = self.topics[t].members.insert(key);
        self.by_conn
            .entry(key)
            .or_default()
            .push((t as u32, member as u32));
        Ok(())
    }

    /// Unsubscribes the connection in slot `key` from `name`, if it was subscribed.
    pub(crate) fn unsubscribe(&mut self, key: u32, name: &str, changes: &mut Vec<Change>) {
        let Some(&t) = self.by_name.get(name) else {
            return;
        };
        let Some(subs) = self.by_conn.get_mut(&key) else {
            return;
        };
        let Some(i) = subs.iter().position(|&(topic, _)| topic as usize == t) else {
            return;
        };
        let (_, member) = subs.swap_remove(i);
        if subs.is_empty() {
            self.by_conn.remove(&key);
        }
        self.leave(t, member as usize, changes);
    }

    /// The connection in slot `key` is gone: all its subscriptions end.
    pub(crate) fn leave_all(&mut self, key: u32, changes: &mut Vec<Change>) {
        let Some(subs) = self.by_conn.remove(&key) else {
            return;
        };
        for (t, member) in subs {
            self.leave(t as usize, member as usize, changes);
        }
    }

    /// The slot keys of `name`'s subscribers (None: nobody listens).
    pub(crate) fn members(&self, name: &str) -> Option<impl Iterator<Item = usize> + '_> {
        let &t = self.by_name.get(name)?;
        Some(self.topics[t].members.iter().map(|(_, &key)| key as usize))
    }

    /// Subscriptions of the connection in slot `key`.
    pub(crate) fn count(&self, key: u32) -> usize {
        self.by_conn.get(&key).map_or(0, Vec::len)
    }

    /// Topics with at least one subscriber.
    pub(crate) fn len(&self) -> usize {
        self.topics.len()
    }

    /// Subscriptions in all.
    pub(crate) fn subscriptions(&self) -> usize {
        self.by_conn.values().map(Vec::len).sum()
    }

    fn leave(&mut self, t: usize, member: usize, changes: &mut Vec<Change>) {
        let Some(topic) = self.topics.get_mut(t) else {
            return;
        };
        topic.members.try_remove(member);
        if topic.members.is_empty() {
            let topic = self.topics.remove(t);
            self.by_name.remove(&topic.name);
            changes.push(Change::Removed(topic.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(t: &Topics, name: &str) -> Vec<usize> {
        let mut m: Vec<usize> = t.members(name).map(Iterator::collect).unwrap_or_default();
        m.sort_unstable();
        m
    }

    #[test]
    fn subscribe_unsubscribe_and_leave() {
        let mut t = Topics::default();
        let mut ch = Vec::new();
        t.subscribe(1, "a", 10, &mut ch).unwrap();
        t.subscribe(2, "a", 10, &mut ch).unwrap();
        t.subscribe(2, "a", 10, &mut ch).unwrap();
        t.subscribe(2, "b", 10, &mut ch).unwrap();
        assert_eq!(ch, [Change::Added("a".into()), Change::Added("b".into())]);
        assert_eq!(members(&t, "a"), [1, 2]);
        assert_eq!((t.count(2), t.subscriptions(), t.len()), (2, 3, 2));
        ch.clear();
        t.unsubscribe(1, "a", &mut ch);
        t.unsubscribe(1, "a", &mut ch);
        t.unsubscribe(1, "nope", &mut ch);
        assert!(ch.is_empty());
        assert_eq!(members(&t, "a"), [2]);
        t.leave_all(2, &mut ch);
        assert_eq!(ch.len(), 2);
        assert!(t.members("a").is_none() && t.members("b").is_none());
        assert_eq!((t.subscriptions(), t.len()), (0, 0));
        assert!(t.by_conn.is_empty() && t.by_name.is_empty());
    }

    #[test]
    fn the_limit_counts_distinct_topics() {
        let mut t = Topics::default();
        let mut ch = Vec::new();
        for i in 0..3 {
            t.subscribe(7, &format!("t{i}"), 3, &mut ch).unwrap();
        }
        assert_eq!(t.subscribe(7, "t0", 3, &mut ch), Ok(()));
        assert_eq!(t.subscribe(7, "t3", 3, &mut ch), Err(Refused::TooMany));
        assert!(t.members("t3").is_none());
    }
}
