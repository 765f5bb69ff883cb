//! Polite HTTP: one host, one request per interval, a global pause after 429, timeouts and a
//! body size limit on every request.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub enum Fetched {
    Page(String),
    /// The channel does not exist or is private (404, or redirected away from its preview).
    Missing,
    RateLimited(Duration),
    ServerError(u16),
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Network(#[from] reqwest::Error),
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
    #[error("unexpected status {0}")]
    Status(u16),
}

pub struct Fetcher {
    client: reqwest::Client,
    base: url::Url,
    interval: Duration,
    max_body: usize,
    retry_after_default: Duration,
    /// Earliest time the next request may start.
    next_slot: Mutex<Instant>,
}

impl Fetcher {
    pub fn new(
        base: &str,
        interval: Duration,
        timeout: Duration,
        max_body: usize,
        retry_after_default: Duration,
    ) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("oleg-scraper/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            base: url::Url::parse(base).expect("validated at start"),
            interval,
            max_body,
            retry_after_default,
            next_slot: Mutex::new(Instant::now()),
        })
    }

    /// Waits for a request slot, then reserves the next one.
    async fn take_slot(&self) {
        let mut next = self.next_slot.lock().await;
        tokio::time::sleep_until(*next).await;
        *next = Instant::now() + self.interval;
    }

    /// Delays every request until `until` (a 429 speaks for the whole host).
    async fn pause_until(&self, until: Instant) {
        let mut next = self.next_slot.lock().await;
        *next = (*next).max(until);
    }

    /// GETs `/s/<channel>` (and `?before=<id>`) on the base URL.
    pub async fn channel_page(
        &self,
        channel: &str,
        before: Option<i64>,
    ) -> Result<Fetched, FetchError> {
        let mut url = self
            .base
            .join(&format!("/s/{channel}"))
            .expect("a path on the base URL");
        if let Some(before) = before {
            url.query_pairs_mut()
                .append_pair("before", &before.to_string());
        }
        self.take_slot().await;
        let mut response = self.client.get(url).send().await?;
        let status = response.status().as_u16();
        match status {
            429 => {
                let wait = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry_after)
                    .unwrap_or(self.retry_after_default);
                self.pause_until(Instant::now() + wait).await;
                return Ok(Fetched::RateLimited(wait));
            }
            404 => return Ok(Fetched::Missing),
            500..=599 => return Ok(Fetched::ServerError(status)),
            200 => {}
            other => return Err(FetchError::Status(other)),
        }
        // Telegram sends private or unknown channels from /s/<name> to /<name>.
        if !response.url().path().starts_with("/s/") {
            return Ok(Fetched::Missing);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > self.max_body {
                return Err(FetchError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched::Page(String::from_utf8_lossy(&body).into_owned()))
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value.trim()).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::retry_after;
    use std::time::Duration;

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
