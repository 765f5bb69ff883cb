//! Polite HTTP: one host, one request per interval, a global pause after 429, timeouts and a
//! body size limit on every request. Redirects are followed only within the base URL's scheme,
//! host and port; nothing a server sends can make the scraper ask another host, and no value it
//! sends (a Retry-After of any size) can overflow a computation.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub enum Fetched {
    Page(String),
    /// The channel does not exist or is private (404, or redirected away from its preview).
    Missing,
    /// A redirect to another scheme, host or port: not followed.
    RedirectedAway,
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
    /// No Retry-After, however large or far in the future, pauses longer than this.
    retry_after_max: Duration,
    /// Earliest time the next request may start.
    next_slot: Mutex<Instant>,
}

/// How long to wait after a 429.
#[derive(Debug, Clone, Copy)]
pub struct RetryAfter {
    /// When the answer names none.
    pub default: Duration,
    /// The longest a server may ask for.
    pub max: Duration,
}

impl Fetcher {
    pub fn new(
        base: &str,
        interval: Duration,
        timeout: Duration,
        max_body: usize,
        retry_after: RetryAfter,
    ) -> Result<Self, FetchError> {
        let base = url::Url::parse(base).expect("validated at start");
        let origin = base.origin();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.url().origin() != origin {
                attempt.stop()
            } else if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(redirects)
            .user_agent(concat!("oleg-scraper/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            base,
            interval,
            max_body,
            retry_after_default: retry_after.default,
            retry_after_max: retry_after.max,
            next_slot: Mutex::new(Instant::now()),
        })
    }

    /// Waits for a request slot, then reserves the next one.
    async fn take_slot(&self) {
        let mut next = self.next_slot.lock().await;
        tokio::time::sleep_until(*next).await;
        *next = later(Instant::now(), self.interval);
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
                    .and_then(|v| retry_after(v, std::time::SystemTime::now()))
                    .unwrap_or(self.retry_after_default)
                    .min(self.retry_after_max);
                self.pause_until(later(Instant::now(), wait)).await;
                return Ok(Fetched::RateLimited(wait));
            }
            404 => return Ok(Fetched::Missing),
            300..=399 => return Ok(Fetched::RedirectedAway),
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
            if body.len().saturating_add(chunk.len()) > self.max_body {
                return Err(FetchError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched::Page(String::from_utf8_lossy(&body).into_owned()))
    }
}

/// `at + wait`, or the far future where that does not fit.
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 86_400))
}

/// `Retry-After`: seconds, or an HTTP date (in the past: no wait). Anything else, negative
/// numbers included, is `None`.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        // More digits than u64 holds is still a number of seconds: a very long one.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_after_in_seconds_or_as_a_date_of_any_size() {
        // 2025-01-01T00:00:00Z.
        let now = UNIX_EPOCH + Duration::from_secs(1_735_689_600);
        let day = Duration::from_secs(86_400);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("18446744073709551615", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            retry_after("Wed, 01 Jan 2025 00:02:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past"
        );
        let far = retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now).unwrap();
        assert!(far > 365 * day, "{far:?}");
        for refused in ["-5", "soon", "", "1.5", "12s"] {
            assert_eq!(retry_after(refused, now), None, "{refused:?}");
        }
    }

    #[test]
    fn no_wait_overflows_an_instant() {
        let now = Instant::now();
        assert!(later(now, Duration::from_secs(u64::MAX)) > now);
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }
}
