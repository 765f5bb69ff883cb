//! Which update is handled when. Each person's updates are handled one after another, in the
//! order Telegram sent them; different people in parallel, at most `bot.max_concurrent_updates`
//! at once. A person over their allowance ([`FloodGuard`]) gets a cheap, limited handling
//! instead, and a person with `bot.max_queued_per_chat` updates waiting gets no more. Every
//! update taken is in the [`Inbox`] until it is finished, and shutdown can wait for those in
//! flight.

use crate::app::{BotApp, Handling};
use crate::flood::{FloodGuard, Verdict};
use crate::inbox::Inbox;
use futures::FutureExt;
use oleg_bus::{new_trace, traced};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teloxide_core::types::{Update, UpdateKind};
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

struct Job {
    update: Update,
    handling: Handling,
}

#[derive(Default)]
struct Queues {
    /// Updates waiting per person; a person is present while their worker runs.
    people: HashMap<i64, VecDeque<Job>>,
    /// Updates taken and not finished.
    in_flight: usize,
}

#[derive(Clone)]
pub struct Dispatcher {
    app: Arc<BotApp>,
    inbox: Inbox,
    queues: Arc<Mutex<Queues>>,
    slots: Arc<Semaphore>,
    flood: Arc<FloodGuard>,
    /// Woken whenever an update finishes.
    finished: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(app: Arc<BotApp>, inbox: Inbox) -> Self {
        let settings = app.settings();
        Self {
            slots: Arc::new(Semaphore::new(settings.max_concurrent_updates)),
            flood: Arc::new(FloodGuard::new(
                settings.person_actions_per_minute,
                settings.person_burst,
            )),
            app,
            inbox,
            queues: Arc::default(),
            finished: Arc::default(),
        }
    }

    /// Who an update comes from (their private chat with the bot has the same id); `None` for
    /// updates no person asked anything with (edits, channel posts), which need no handling.
    pub fn person_of(update: &Update) -> Option<i64> {
        match &update.kind {
            UpdateKind::Message(message) => message.from.as_ref().map(|from| from.id.0 as i64),
            UpdateKind::CallbackQuery(query) => Some(query.from.id.0 as i64),
            _ => None,
        }
    }

    /// Takes an update kept in the inbox: queues it behind its person's earlier ones, or drops
    /// it (counted) if that person has too many waiting.
    pub fn dispatch(&self, update: Update) {
        let Some(person) = Self::person_of(&update) else {
            self.app.ignore(&update);
            self.forget(update.id.0);
            return;
        };
        let handling = match self.flood.check(person) {
            Verdict::Allowed => Handling::Full,
            Verdict::Refused { warn } => {
                self.app
                    .metrics()
                    .throttled
                    .with_label_values(&["rate"])
                    .inc();
                Handling::Limited { warn }
            }
        };
        let job = Job { update, handling };
        let mut queues = self.queues.lock().expect("not poisoned");
        match queues.people.entry(person) {
            Entry::Occupied(mut waiting) => {
                if waiting.get().len() >= self.app.settings().max_queued_per_chat {
                    self.app
                        .metrics()
                        .throttled
                        .with_label_values(&["queue_full"])
                        .inc();
                    drop(queues);
                    self.forget(job.update.id.0);
                    return;
                }
                waiting.get_mut().push_back(job);
            }
            Entry::Vacant(vacant) => {
                vacant.insert(VecDeque::from([job]));
                self.spawn_worker(person);
            }
        }
        queues.in_flight += 1;
        self.app.metrics().in_flight.set(queues.in_flight as i64);
    }

    /// Removes a finished (or refused) update from the inbox, in the background.
    fn forget(&self, id: u32) {
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            if let Err(error) = inbox.done(id).await {
                tracing::warn!(%error, update = id, "could not mark an update handled; a restart may handle it again");
            }
        });
    }

    /// Handles one person's updates in order until none are left.
    fn spawn_worker(&self, person: i64) {
        let this = self.clone();
        tokio::spawn(async move {
            let _slot = this
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            loop {
                let job = {
                    let mut queues = this.queues.lock().expect("not poisoned");
                    match queues.people.get_mut(&person).and_then(VecDeque::pop_front) {
                        Some(job) => job,
                        None => {
                            queues.people.remove(&person);
                            return;
                        }
                    }
                };
                let id = job.update.id.0;
                // Each update starts a trace: the vote it publishes, the request to the ranker
                // and everything they lead to carry it.
                let trace = new_trace();
                let span = tracing::info_span!("update", trace = %trace, update = id, person);
                let handling = this.app.handle(&job.update, job.handling);
                let handled = traced(trace, AssertUnwindSafe(handling).catch_unwind())
                    .instrument(span)
                    .await;
                if handled.is_err() {
                    tracing::error!(update = id, "handling an update panicked");
                }
                if let Err(error) = this.inbox.done(id).await {
                    tracing::warn!(%error, update = id, "could not mark an update handled; a restart may handle it again");
                }
                let mut queues = this.queues.lock().expect("not poisoned");
                queues.in_flight -= 1;
                this.app.metrics().in_flight.set(queues.in_flight as i64);
                drop(queues);
                this.finished.notify_waiters();
            }
        });
    }

    /// Waits up to `within` for every update taken to finish; returns how many did not.
    pub async fn drain(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let finished = self.finished.notified();
            let left = self.queues.lock().expect("not poisoned").in_flight;
            if left == 0 || tokio::time::timeout_at(deadline, finished).await.is_err() {
                return left;
            }
        }
    }
}
