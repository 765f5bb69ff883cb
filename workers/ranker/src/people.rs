//! What a replica remembers of the people it serves between requests: the posts each voted on
//! or was sent in the candidate window, and their likes per channel. A request reads the store
//! only for someone it does not hold (or holds for longer than the time to live); the notices
//! the replica hears keep the rest current (every vote cast, and its own deliveries). A post
//! another replica sent is not here until the entry is read again, and costs one refused
//! delivery record meanwhile: the store's unique key, not this cache, keeps it from repeating.

use lru::LruCache;
use oleg_messages::UserId;
use oleg_store::PersonHistory;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct PeopleCache {
    entries: Mutex<LruCache<UserId, Entry>>,
    time_to_live: Duration,
}

struct Entry {
    history: Arc<PersonHistory>,
    read_at: Instant,
}

impl PeopleCache {
    pub fn new(capacity: NonZeroUsize, time_to_live: Duration) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            time_to_live,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, LruCache<UserId, Entry>> {
        self.entries.lock().expect("not poisoned")
    }

    /// The person's history if it is held and fresh enough.
    pub fn get(&self, user: UserId) -> Option<Arc<PersonHistory>> {
        let mut entries = self.entries();
        let entry = entries.get(&user)?;
        if entry.read_at.elapsed() > self.time_to_live {
            entries.pop(&user);
            return None;
        }
        Some(entry.history.clone())
    }

    /// Holds a history just read from the store, unless a fresher one arrived meanwhile.
    pub fn insert(&self, user: UserId, history: PersonHistory) -> Arc<PersonHistory> {
        let mut entries = self.entries();
        if let Some(entry) = entries.get(&user) {
            if entry.read_at.elapsed() <= self.time_to_live {
                return entry.history.clone();
            }
        }
        let history = Arc::new(history);
        entries.put(
            user,
            Entry {
                history: history.clone(),
                read_at: Instant::now(),
            },
        );
        history
    }

    /// Applies `change` to the person's history if it is held (someone not held is read in
    /// full at their next request), and returns what it returned. A request holding the old
    /// history keeps its copy.
    pub fn update<R>(
        &self,
        user: UserId,
        change: impl FnOnce(&mut PersonHistory) -> R,
    ) -> Option<R> {
        let mut entries = self.entries();
        let entry = entries.peek_mut(&user)?;
        Some(change(Arc::make_mut(&mut entry.history)))
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Forgets everyone: their histories missed notices.
    pub fn clear(&self) {
        self.entries().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oleg_store::PostKey;

    fn user(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    #[test]
    fn notices_update_held_people_and_the_least_recent_is_dropped_when_full() {
        let cache = PeopleCache::new(NonZeroUsize::new(2).unwrap(), Duration::from_secs(60));
        assert!(cache.get(user(1)).is_none());
        cache.insert(user(1), PersonHistory::default());
        let before = cache.get(user(1)).unwrap();
        cache.update(user(1), |h| h.record_vote(PostKey::new("a", 1), true, 5));
        cache.update(user(2), |h| h.record_sent(PostKey::new("a", 2)));
        let after = cache.get(user(1)).unwrap();
        assert!(before.seen.is_empty(), "a request's copy stays as it was");
        assert_eq!(after.channel_votes["a"], (1, 1));
        assert!(
            cache.get(user(2)).is_none(),
            "nobody held: nothing to update"
        );
        // A history read while a notice arrived does not replace the updated one.
        cache.insert(user(1), PersonHistory::default());
        assert_eq!(cache.get(user(1)).unwrap().seen.len(), 1);
        cache.insert(user(2), PersonHistory::default());
        cache.insert(user(3), PersonHistory::default());
        assert_eq!(cache.len(), 2);
        assert!(cache.get(user(1)).is_none(), "the least recently used went");
    }

    #[test]
    fn an_entry_older_than_its_time_to_live_is_read_again() {
        let cache = PeopleCache::new(NonZeroUsize::new(8).unwrap(), Duration::ZERO);
        cache.insert(user(1), PersonHistory::default());
        std::thread::sleep(Duration::from_millis(2));
        assert!(cache.get(user(1)).is_none());
        assert_eq!(cache.len(), 0);
    }
}
