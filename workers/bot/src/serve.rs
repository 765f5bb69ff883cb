//! Where updates come from (long polling, or a webhook) and when digests go out.

use crate::app::BotApp;
use crate::dispatch::Dispatcher;
use crate::inbox::Inbox;
use crate::settings::UpdateMode;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Duration as Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use hmac::{Hmac, Mac};
use oleg_bus::Backoff;
use secrecy::ExposeSecret;
use sha2::Sha256;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use teloxide_core::payloads::setters::*;
use teloxide_core::requests::Requester;
use teloxide_core::types::{AllowedUpdate, Update};
use tokio_util::sync::CancellationToken;

/// Receives updates until shutdown, by the configured mode, after those an earlier bot left
/// unfinished; then waits (up to `bot.shutdown_grace_s`) for the updates in flight.
pub async fn receive_updates(
    app: Arc<BotApp>,
    inbox: Inbox,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let dispatcher = Dispatcher::new(app.clone(), inbox.clone(), shutdown.clone());
    let leftovers = inbox.leftovers().await?;
    if !leftovers.is_empty() {
        tracing::info!(
            updates = leftovers.len(),
            "handling the updates an earlier bot left unfinished"
        );
    }
    let resume_at = match app.settings().mode {
        UpdateMode::Polling => {
            let now_ms = Utc::now().timestamp_millis();
            inbox.resume_offset(&leftovers, now_ms).await?
        }
        UpdateMode::Webhook => 0,
    };
    for update in leftovers {
        dispatcher.dispatch(update);
    }
    let receiving = async {
        match app.settings().mode {
            UpdateMode::Polling => poll(&app, &inbox, &dispatcher, resume_at, &shutdown).await,
            UpdateMode::Webhook => webhook(&app, &inbox, &dispatcher, &shutdown).await,
        }
    };
    let received = tokio::select! {
        received = receiving => received,
        never = inbox.forget_handled_hourly() => match never {},
    };
    let grace = Duration::from_secs(app.settings().shutdown_grace_s);
    let unfinished = dispatcher.drain(grace).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            ?grace,
            "updates still in flight at shutdown: they stay kept, and the next bot handles them"
        );
    }
    received
}

/// Keeps `updates` (the ones from people) in the inbox and, polling, records that those below
/// `taken_below` were taken; retries while the store is down. Returns the updates to dispatch,
/// or `None` if shutdown came first (those kept are then the next bot's leftovers).
async fn keep(
    app: &BotApp,
    inbox: &Inbox,
    updates: Vec<Update>,
    taken_below: Option<i32>,
    shutdown: &CancellationToken,
) -> Option<Vec<Update>> {
    let (from_people, others): (Vec<Update>, Vec<Update>) = updates
        .into_iter()
        .partition(|u| Dispatcher::person_of(u).is_some());
    for update in &others {
        app.count(update);
    }
    let fresh = retrying_store(shutdown, || inbox.keep(from_people.clone())).await?;
    if let Some(offset) = taken_below {
        let now_ms = Utc::now().timestamp_millis();
        retrying_store(shutdown, || inbox.taken_below(offset, now_ms)).await?;
    }
    Some(fresh)
}

/// Runs `write` until the store takes it, waiting longer after each failure; `None` if
/// shutdown came first.
async fn retrying_store<T, Write, Writing>(shutdown: &CancellationToken, write: Write) -> Option<T>
where
    Write: Fn() -> Writing,
    Writing: std::future::Future<Output = mongodb::error::Result<T>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match write().await {
            Ok(done) => return Some(done),
            Err(error) => {
                tracing::warn!(%error, ?delay, "could not keep updates; retrying before confirming them");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Long polling from `offset`. Each poll's offset confirms the updates of the one before, which
/// are kept in the inbox (and recorded as taken) by then, so a slow or flooding chat never holds
/// up the others.
async fn poll(
    app: &BotApp,
    inbox: &Inbox,
    dispatcher: &Dispatcher,
    mut offset: i32,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // A webhook left from another deployment would make getUpdates fail.
    app.bot().delete_webhook().await?;
    let timeout = app.settings().poll_timeout_s as u32;
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let request = app
            .bot()
            .get_updates()
            .offset(offset)
            .timeout(timeout)
            .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
            .into_future();
        let updates = tokio::select! {
            _ = shutdown.cancelled() => break,
            updates = request => updates,
        };
        match updates {
            Ok(updates) => {
                failures = 0;
                app.metrics().receiving.set(1);
                let next = updates.iter().map(|u| u.id.0 as i32 + 1).max();
                let Some(fresh) = keep(app, inbox, updates, next, shutdown).await else {
                    break;
                };
                for update in fresh {
                    dispatcher.dispatch(update);
                }
                offset = next.unwrap_or(offset).max(offset);
            }
            Err(error) => {
                failures += 1;
                app.metrics().receiving.set(0);
                crate::telegram::count_error(app.metrics(), &error);
                let delay = Duration::from_millis(500 * u64::from(failures.min(20)));
                tracing::warn!(%error, ?delay, "getUpdates failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    // The last poll's updates are kept: confirm them, so Telegram forgets them. If it cannot be
    // told, the next bot starts past them all the same (the offset recorded in the store).
    if offset > 0 {
        if let Err(error) = app
            .bot()
            .get_updates()
            .offset(offset)
            .limit(1)
            .timeout(0)
            .await
        {
            tracing::warn!(%error, offset, "could not confirm the last updates to Telegram; the next bot starts past them");
        }
    }
    Ok(())
}

/// The secret Telegram sends back in every webhook call, derived from the callback secret.
fn webhook_secret(app: &BotApp) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app.settings().callback_secret.expose_secret().as_bytes())
            .expect("any key length");
    mac.update(b"webhook");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Webhook mode: Telegram POSTs each update. The secret token is checked (in constant time)
/// before the body is read, bodies over `bot.webhook_max_body_bytes` are refused, and an update
/// is answered once it is kept in the inbox (a store outage answers 503: Telegram sends it again).
async fn webhook(
    app: &BotApp,
    inbox: &Inbox,
    dispatcher: &Dispatcher,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let secret = webhook_secret(app);
    let url = reqwest::Url::parse(&app.settings().webhook_url)?;
    app.bot()
        .set_webhook(url.clone())
        .secret_token(secret.clone())
        .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
        .await?;
    app.metrics().receiving.set(1);
    let router = Router::new()
        .route(url.path(), post(webhook_update))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(secret),
            check_webhook_secret,
        ))
        .layer(DefaultBodyLimit::max(app.settings().webhook_max_body_bytes))
        .with_state((inbox.clone(), dispatcher.clone()));
    let listener = tokio::net::TcpListener::bind(&app.settings().webhook_listen).await?;
    tracing::info!(listen = %app.settings().webhook_listen, "receiving updates by webhook");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    Ok(())
}

async fn check_webhook_secret(
    State(secret): State<Arc<String>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get("x-telegram-bot-api-secret-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if bool::from(given.ct_eq(secret.as_bytes())) {
        next.run(request).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

async fn webhook_update(
    State((inbox, dispatcher)): State<(Inbox, Dispatcher)>,
    body: Bytes,
) -> StatusCode {
    let update = match serde_json::from_slice::<Update>(&body) {
        Ok(update) => update,
        Err(error) => {
            tracing::warn!(%error, "a webhook body that is not an update");
            return StatusCode::BAD_REQUEST;
        }
    };
    if Dispatcher::person_of(&update).is_none() {
        return StatusCode::OK;
    }
    match inbox.keep(vec![update]).await {
        Ok(fresh) => {
            for update in fresh {
                dispatcher.dispatch(update);
            }
            StatusCode::OK
        }
        Err(error) => {
            tracing::warn!(%error, "could not keep a webhook update; Telegram will send it again");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// The first wait before a digest is tried again for those it did not reach, and the longest.
const DIGEST_RETRY_MIN: Duration = Duration::from_secs(5);
const DIGEST_RETRY_MAX: Duration = Duration::from_secs(300);

/// Sends the digests at the configured local times until shutdown.
pub async fn send_digests(app: Arc<BotApp>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = app.settings();
    let zone: Tz = settings
        .parsed_timezone()
        .ok_or_else(|| anyhow::anyhow!("bot.timezone {} is not a time zone", settings.timezone))?;
    let times = settings
        .digest_seconds()
        .map_err(|t| anyhow::anyhow!("bot.digest_times: {t} is not a time of day"))?;
    if times.is_empty() {
        return Ok(());
    }
    let catch_up = Days::seconds(settings.digest_catch_up_s as i64);
    // A digest goes out to everyone it can reach; those the ranker gave no post (a ranker
    // restarting at its time, say) or whose claim the store did not take are tried again, until
    // `catch_up` past its time or the next digest's.
    let run = |slot: DateTime<Utc>| {
        let (app, shutdown, times) = (&app, &shutdown, &times);
        async move {
            let local = slot.with_timezone(&zone);
            let last_try = next_slot(slot, zone, times)
                .map_or(slot + catch_up, |next| next.min(slot + catch_up));
            let mut retries = Backoff::new(DIGEST_RETRY_MIN, DIGEST_RETRY_MAX);
            loop {
                let postponed = match app.run_digest(slot, shutdown).await {
                    Ok(summary) => summary.postponed > 0,
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), %local, "digest failed");
                        true
                    }
                };
                if !postponed || shutdown.is_cancelled() {
                    return;
                }
                let delay = retries.next_delay();
                if Utc::now() + Days::milliseconds(delay.as_millis() as i64) > last_try {
                    tracing::warn!(%local, "some people did not get the digest, and its time is too long past to try again");
                    return;
                }
                tracing::info!(%local, ?delay, "trying the digest again for those it did not reach");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    // The last digest's time may have passed while no bot ran, or a stopping bot may have left
    // it half sent: those it has not reached get it now, if it is recent enough.
    if let Some(slot) = last_slot(Utc::now(), zone, &times).filter(|s| Utc::now() - *s <= catch_up)
    {
        tracing::info!(local = %slot.with_timezone(&zone), "catching up on the last digest");
        run(slot).await;
    }
    loop {
        let Some(slot) = next_slot(Utc::now(), zone, &times) else {
            anyhow::bail!("no digest time can be placed in {zone}");
        };
        let wait = (slot - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        run(slot).await;
    }
}

/// The first of `times` (seconds after local midnight in `zone`) strictly after `now`.
pub fn next_slot(now: DateTime<Utc>, zone: Tz, times: &[u32]) -> Option<DateTime<Utc>> {
    slots_around(now, zone, times).find(|slot| *slot > now)
}

/// The last of `times` at or before `now`.
pub fn last_slot(now: DateTime<Utc>, zone: Tz, times: &[u32]) -> Option<DateTime<Utc>> {
    slots_around(now, zone, times)
        .take_while(|slot| *slot <= now)
        .last()
}

/// `times` (sorted seconds after local midnight in `zone`) on the days from the one before
/// `now`'s to two after, in order.
fn slots_around(
    now: DateTime<Utc>,
    zone: Tz,
    times: &[u32],
) -> impl Iterator<Item = DateTime<Utc>> + '_ {
    let today = now.with_timezone(&zone).date_naive();
    (-1..=2)
        .flat_map(move |days| times.iter().map(move |t| (today + Days::days(days), *t)))
        .filter_map(move |(date, seconds)| {
            let time = NaiveTime::from_num_seconds_from_midnight_opt(seconds, 0)?;
            // A time skipped by a clock change does not happen that day.
            zone.from_local_datetime(&date.and_time(time))
                .earliest()
                .map(|local| local.with_timezone(&Utc))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_digest_is_the_next_moscow_time_of_day() {
        let times = [10 * 3600 + 20 * 60, 19 * 3600 + 20 * 60];
        let moscow: Tz = "Europe/Moscow".parse().unwrap();
        // 08:00 UTC is 11:00 in Moscow: the next is 19:20 Moscow, 16:20 UTC.
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
        assert_eq!(
            next_slot(now, moscow, &times),
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 16, 20, 0).unwrap())
        );
        // After the last one: tomorrow's first, 07:20 UTC.
        let late = Utc.with_ymd_and_hms(2026, 11, 27, 17, 0, 0).unwrap();
        assert_eq!(
            next_slot(late, moscow, &times),
            Some(Utc.with_ymd_and_hms(2026, 11, 28, 7, 20, 0).unwrap())
        );
    }

    #[test]
    fn the_last_digest_is_the_latest_moscow_time_of_day_passed() {
        let times = [10 * 3600 + 20 * 60, 19 * 3600 + 20 * 60];
        let moscow: Tz = "Europe/Moscow".parse().unwrap();
        // 11:00 in Moscow: today's 10:20, 07:20 UTC.
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
        assert_eq!(
            last_slot(now, moscow, &times),
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 7, 20, 0).unwrap())
        );
        // At a digest's time, that one.
        assert_eq!(
            last_slot(
                Utc.with_ymd_and_hms(2026, 11, 27, 16, 20, 0).unwrap(),
                moscow,
                &times
            ),
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 16, 20, 0).unwrap())
        );
        // 09:00 in Moscow, before the first: yesterday's 19:20, 16:20 UTC.
        let early = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
        assert_eq!(
            last_slot(early, moscow, &times),
            Some(Utc.with_ymd_and_hms(2026, 11, 26, 16, 20, 0).unwrap())
        );
    }
}
