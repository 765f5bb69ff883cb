//! The training lease's renewal, running beside a cycle until the cycle ends it.

use oleg_store::{LeaseClaim, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Renews a held lease every third of its time to live, by the store's clock, until
/// [`end`](Self::end); flags a lost lease (or a stop asked for) in the cycle's `abandon`.
pub(crate) struct LeaseRenewal {
    ended: CancellationToken,
    task: JoinHandle<()>,
}

impl LeaseRenewal {
    pub(crate) fn start(
        store: Store,
        claim: LeaseClaim,
        ttl_s: u64,
        shutdown: CancellationToken,
        abandon: Arc<AtomicBool>,
    ) -> Self {
        let ended = CancellationToken::new();
        let task = tokio::spawn(renew(store, claim, ttl_s, shutdown, abandon, ended.clone()));
        Self { ended, task }
    }

    /// Stops renewing, and returns once a renewal under way has been answered: the lease is
    /// released after, so no renewal meets it released and reports it taken over.
    pub(crate) async fn end(self) {
        self.ended.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the training lease's renewal panicked");
        }
    }
}

async fn renew(
    store: Store,
    claim: LeaseClaim,
    ttl_s: u64,
    shutdown: CancellationToken,
    abandon: Arc<AtomicBool>,
    ended: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = ended.cancelled() => return,
            _ = shutdown.cancelled() => {
                abandon.store(true, Ordering::SeqCst);
                return;
            }
            _ = tokio::time::sleep(Duration::from_millis(ttl_s * 1000 / 3)) => {}
        }
        let renewed = match store.store_time_ms().await {
            Ok(now) => store.renew_lease(&claim, now, (ttl_s * 1000) as i64).await,
            Err(error) => Err(error),
        };
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(token = claim.token, "the training lease was taken over");
                abandon.store(true, Ordering::SeqCst);
                return;
            }
            // The store is away: the lease may still be ours; the commit decides.
            Err(error) => tracing::warn!(%error, "could not renew the training lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oleg_settings::MongoSettings;
    use oleg_testkit::stalling_proxy::StallingProxy;
    use oleg_testkit::{mongo_settings, mongodb_address};

    /// Defect: a cycle cancelled its lease's renewal and released the lease at once; a renewal
    /// under way then met the released lease and reported it taken over (a warning that reads
    /// as two trainers at odds). The store is stalled while a renewal waits for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renewal_under_way_is_answered_before_the_lease_is_released() {
        let mongo = mongo_settings("trainer-lease-renewal");
        let store = Store::connect(&mongo, "trainer-lease").await.unwrap();
        let proxy = StallingProxy::start(mongodb_address()).await;
        let through_proxy = MongoSettings {
            uri: proxy.mongodb_uri().into(),
            ..mongo.clone()
        };
        let renewing_store = Store::connect(&through_proxy, "trainer-lease")
            .await
            .unwrap();
        let now = store.store_time_ms().await.unwrap();
        let claim = store
            .acquire_lease("a-lease", "trainer-1", now, 6_000)
            .await
            .unwrap()
            .expect("a free lease");
        // Connected before the stall, so that the renewal's request is what waits.
        renewing_store.store_time_ms().await.unwrap();
        let abandon = Arc::new(AtomicBool::new(false));
        let renewal = LeaseRenewal::start(
            renewing_store.clone(),
            claim.clone(),
            6,
            CancellationToken::new(),
            abandon.clone(),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.stall();
        // The first renewal starts at two seconds and waits for the stalled store.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let ending = tokio::spawn(renewal.end());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !ending.is_finished(),
            "the renewal ended while a renewal was still waiting for the store"
        );
        proxy.resume();
        ending.await.unwrap();
        store.release_lease(&claim).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !abandon.load(Ordering::SeqCst),
            "a renewal met the released lease"
        );
        assert!(!store.holds_lease(&claim).await.unwrap(), "released");
        let _ = store.drop_database().await;
        renewing_store.close().await;
        store.close().await;
    }
}
