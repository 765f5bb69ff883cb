//! How long a handler spent waiting on others (Telegram, the broker, the store, the ranker), so
//! that what is left — the bot's own work — can be measured apart from it.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

tokio::task_local! {
    static WAITED: Cell<Duration>;
}

/// Runs `work`, returning its output and how long it spent inside [`waiting`].
pub async fn measured<F: Future>(work: F) -> (F::Output, Duration) {
    WAITED
        .scope(Cell::new(Duration::ZERO), async {
            let output = work.await;
            (output, WAITED.with(Cell::get))
        })
        .await
}

/// Awaits `other`, counting the time as waiting (outside [`measured`], it only awaits).
pub async fn waiting<F: Future>(other: F) -> F::Output {
    let started = Instant::now();
    let output = other.await;
    let _ = WAITED.try_with(|waited| waited.set(waited.get() + started.elapsed()));
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_the_time_spent_waiting_counts() {
        let ((), waited) = measured(async {
            waiting(tokio::time::sleep(Duration::from_millis(30))).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            waiting(tokio::time::sleep(Duration::from_millis(30))).await;
        })
        .await;
        assert_eq!(waited, Duration::from_millis(60));
        assert_eq!(waiting(async { 7 }).await, 7, "outside a measurement");
    }
}
