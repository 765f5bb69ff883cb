//! Which update is handled when. Each person's updates are handled one after another, in the
//! order Telegram sent them; different people in parallel, at most `bot.max_concurrent_updates`
//! at once. A person over their allowance ([`FloodGuard`]) gets a cheap, limited handling
//! instead, and a person with `bot.max_queued_per_chat` updates waiting gets no more. Every
//! update taken is in the [`Inbox`] until it is finished, and shutdown can wait for those in
//! flight. An update whose vote (or start, pause, channel) the broker or the store did not take
//! stays kept and is tried again, its person's later updates waiting behind it; a bot stopping
//! meanwhile leaves them all kept, for the next one.

use crate::app::{BotApp, Handled, Handling};
use crate::flood::{FloodGuard, Verdict};
use crate::inbox::Inbox;
use futures::FutureExt;
use oleg_bus::{new_trace, traced, Backoff};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teloxide_core::types::{Update, UpdateKind};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The wait before the first retry of a postponed update; it doubles up to [`RETRY_MAX`]. Each
/// attempt itself waits up to `amqp.confirm_timeout_ms` for the broker.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

struct Job {
    update: Update,
    handling: Handling,
}

#[derive(Default)]
struct Queues {
    /// Updates waiting per person; a person is present while their worker runs.
    people: HashMap<i64, VecDeque<Job>>,
    /// Updates taken and not finished (handled, or refused and removed from the inbox).
    in_flight: usize,
    /// People whose postponed update was left kept at shutdown: their later updates are left
    /// too, so none overtakes it.
    left: HashSet<i64>,
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
    /// Ends the retries of postponed updates.
    shutdown: CancellationToken,
}

impl Dispatcher {
    pub fn new(app: Arc<BotApp>, inbox: Inbox, shutdown: CancellationToken) -> Self {
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
            shutdown,
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
        self.app.count(&update);
        let Some(person) = Self::person_of(&update) else {
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
        if queues.left.contains(&person) {
            return;
        }
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
        self.count_taken(&mut queues);
    }

    fn count_taken(&self, queues: &mut Queues) {
        queues.in_flight += 1;
        self.app.metrics().in_flight.set(queues.in_flight as i64);
    }

    /// Marks a refused update done in the inbox, in the background; it counts as in flight until
    /// then, so that shutdown waits for that too.
    fn forget(&self, id: u32) {
        self.count_taken(&mut self.queues.lock().expect("not poisoned"));
        let this = self.clone();
        tokio::spawn(async move { this.finish(id).await });
    }

    /// Marks a handled or refused update done in the inbox and counts it finished.
    async fn finish(&self, id: u32) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let Err(error) = self.inbox.done(id, now_ms).await {
            tracing::warn!(%error, update = id, "could not mark an update handled; a restart may handle it again");
        }
        self.count_finished(|_| 1);
    }

    /// Leaves `person`'s postponed update and those queued behind it kept (shutdown came while
    /// it waited to be tried again); counts them finished.
    fn leave(&self, person: i64) {
        self.count_finished(|queues| {
            queues.left.insert(person);
            let left = 1 + queues
                .people
                .remove(&person)
                .map_or(0, |queued| queued.len());
            tracing::info!(
                person,
                updates = left,
                "stopping: a postponed update and those behind it stay kept for the next bot"
            );
            left
        });
    }

    /// Counts finished the updates `finished` takes out of the queues, and wakes the drain.
    fn count_finished(&self, finished: impl FnOnce(&mut Queues) -> usize) {
        let mut queues = self.queues.lock().expect("not poisoned");
        queues.in_flight -= finished(&mut queues);
        self.app.metrics().in_flight.set(queues.in_flight as i64);
        drop(queues);
        self.finished.notify_waiters();
    }

    /// Handles one person's updates in order until none are left; a postponed one is tried
    /// again (after a backoff) before the next.
    fn spawn_worker(&self, person: i64) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut retries = Backoff::new(RETRY_MIN, RETRY_MAX);
            loop {
                let slot = this
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
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
                    .await
                    .unwrap_or_else(|_| {
                        tracing::error!(update = id, "handling an update panicked");
                        Handled::Finished
                    });
                if handled == Handled::Postponed {
                    // The wait holds no slot: other people's updates go on meanwhile.
                    drop(slot);
                    tokio::select! {
                        _ = this.shutdown.cancelled() => {
                            this.leave(person);
                            return;
                        }
                        _ = tokio::time::sleep(retries.next_delay()) => {}
                    }
                    // First in line again: the person's later updates wait behind it.
                    this.queues
                        .lock()
                        .expect("not poisoned")
                        .people
                        .get_mut(&person)
                        .expect("a person is present while their worker runs")
                        .push_front(job);
                    continue;
                }
                retries.reset();
                this.finish(id).await;
            }
        });
    }

    /// Waits up to `within` for every update taken to finish; returns how many did not.
    pub async fn drain(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let finished = self.finished.notified();
            let left = self.queues.lock().expect("not poisoned").in_flight;
            // A deadline already passed waits no more: the timer would let it run on until its
            // next tick, during which updates can still finish.
            if left == 0
                || tokio::time::Instant::now() >= deadline
                || tokio::time::timeout_at(deadline, finished).await.is_err()
            {
                return left;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chats::Chats;
    use crate::metrics::BotMetrics;
    use crate::settings::BotConfig;
    use oleg_settings::Sources;
    use oleg_testkit::{mongo_settings, TestServices};
    use secrecy::ExposeSecret;

    /// Defect: an update refused without handling left the inbox in a task shutdown did not
    /// wait for, so the store could close first and a restart would take the update again.
    #[tokio::test]
    async fn shutdown_waits_until_a_refused_update_has_left_the_inbox() {
        let test = "bot-refused-update-leaves-the-inbox";
        let services = TestServices::start(test, mongo_settings(test)).await;
        let mut sources = Sources::repository();
        sources.vars = [
            ("OLEG__BOT__TOKEN", "12345:test"),
            ("OLEG__BOT__CALLBACK_SECRET", "a secret for tests only"),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .into();
        let settings = oleg_settings::load::<BotConfig>(&sources)
            .expect("the shipped bot settings")
            .bot;
        let bot = teloxide_core::Bot::new(settings.token.expose_secret());
        let database = services.store.database();
        let metrics = BotMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let app = BotApp::new(
            bot,
            services.bus.clone(),
            Chats::new(database),
            settings,
            metrics,
        )
        .await
        .expect("the bot's app");
        let inbox = Inbox::new(database);
        // A channel's post: nobody asked anything with it.
        let update: Update = serde_json::from_value(serde_json::json!({
            "update_id": 7,
            "channel_post": {
                "message_id": 1, "date": 0, "text": "news",
                "chat": {"id": -1001, "type": "channel", "title": "a channel"},
            },
        }))
        .expect("an update");
        inbox.keep(vec![update.clone()]).await.expect("kept");

        let dispatcher = Dispatcher::new(Arc::new(app), inbox.clone(), CancellationToken::new());
        dispatcher.dispatch(update);
        assert_eq!(
            dispatcher.drain(Duration::ZERO).await,
            1,
            "a refused update counts as in flight until it has left the inbox"
        );
        assert_eq!(dispatcher.drain(Duration::from_secs(10)).await, 0);
        assert!(inbox.leftovers().await.expect("read").is_empty());
        services.finish().await;
    }
}
