//! Where updates come from (long polling, or a webhook) and when digests go out.

use crate::app::BotApp;
use crate::settings::UpdateMode;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Duration as Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use teloxide_core::payloads::setters::*;
use teloxide_core::requests::Requester;
use teloxide_core::types::{AllowedUpdate, Update};
use tokio_util::sync::CancellationToken;

/// Receives updates until shutdown, by the configured mode, handling each in its own task.
pub async fn receive_updates(app: Arc<BotApp>, shutdown: CancellationToken) -> anyhow::Result<()> {
    match app.settings().mode {
        UpdateMode::Polling => poll(app, shutdown).await,
        UpdateMode::Webhook => webhook(app, shutdown).await,
    }
}

async fn poll(app: Arc<BotApp>, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A webhook left from another deployment would make getUpdates fail.
    app.bot().delete_webhook().await?;
    let timeout = app.settings().poll_timeout_s as u32;
    let mut offset: i32 = 0;
    let mut failures = 0u32;
    loop {
        let request = app
            .bot()
            .get_updates()
            .offset(offset)
            .timeout(timeout)
            .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
            .into_future();
        let updates = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            updates = request => updates,
        };
        match updates {
            Ok(updates) => {
                failures = 0;
                for update in updates {
                    offset = offset.max(update.id.0 as i32 + 1);
                    let app = app.clone();
                    tokio::spawn(async move { app.handle(update).await });
                }
            }
            Err(error) => {
                failures += 1;
                let delay = Duration::from_millis(500 * u64::from(failures.min(20)));
                tracing::warn!(%error, ?delay, "getUpdates failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
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

async fn webhook(app: Arc<BotApp>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let secret = webhook_secret(&app);
    let url = reqwest::Url::parse(&app.settings().webhook_url)?;
    app.bot()
        .set_webhook(url.clone())
        .secret_token(secret.clone())
        .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
        .await?;
    let router = Router::new()
        .route(url.path(), post(webhook_update))
        .with_state((app.clone(), Arc::new(secret)));
    let listener = tokio::net::TcpListener::bind(&app.settings().webhook_listen).await?;
    tracing::info!(listen = %app.settings().webhook_listen, "receiving updates by webhook");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

async fn webhook_update(
    State((app, secret)): State<(Arc<BotApp>, Arc<String>)>,
    headers: HeaderMap,
    Json(update): Json<Update>,
) -> StatusCode {
    let given = headers
        .get("x-telegram-bot-api-secret-token")
        .and_then(|v| v.to_str().ok());
    if given != Some(secret.as_str()) {
        return StatusCode::UNAUTHORIZED;
    }
    tokio::spawn(async move { app.handle(update).await });
    StatusCode::OK
}

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
    loop {
        let Some(slot) = next_slot(Utc::now(), zone, &times) else {
            anyhow::bail!("no digest time can be placed in {zone}");
        };
        let wait = (slot - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        if let Err(error) = app.run_digest(slot).await {
            tracing::error!(error = format!("{error:#}"), local = %slot.with_timezone(&zone), "digest failed");
        }
    }
}

/// The first of `times` (seconds after local midnight in `zone`) strictly after `now`.
pub fn next_slot(now: DateTime<Utc>, zone: Tz, times: &[u32]) -> Option<DateTime<Utc>> {
    let today = now.with_timezone(&zone).date_naive();
    (0..=2)
        .flat_map(|days| times.iter().map(move |t| (today + Days::days(days), *t)))
        .filter_map(|(date, seconds)| {
            let time = NaiveTime::from_num_seconds_from_midnight_opt(seconds, 0)?;
            // A time skipped by a clock change does not happen that day.
            zone.from_local_datetime(&date.and_time(time))
                .earliest()
                .map(|local| local.with_timezone(&Utc))
        })
        .find(|slot| *slot > now)
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
}
