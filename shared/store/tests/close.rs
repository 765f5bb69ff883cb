//! Closing the store before its runtime stops (its own test binary: it counts every panic).

use mongodb::bson::doc;
use oleg_store::Store;
use oleg_testkit::mongo_settings;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Runtimes started and stopped: the race the close prevents is lost only now and then.
const RUNTIMES: usize = 1000;

#[test]
fn a_store_closed_before_its_runtime_stops_leaves_the_driver_nothing_to_panic_in() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        hook(info);
    }));
    let settings = mongo_settings("store-close");
    for round in 0..RUNTIMES {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = Store::connect(&settings, "oleg-store-test").await.unwrap();
            // Operations that take the client's implicit sessions, which it ends on closing.
            store
                .ensure_indexes()
                .await
                .expect("the store is reachable");
            store
                .collections()
                .votes
                .count_documents(doc! {})
                .await
                .unwrap();
            let clone = store.clone();
            store.close().await;
            drop(clone);
            // The runtime stops at a different point of whatever the drop left running.
            for _ in 0..round % 3 {
                tokio::task::yield_now().await;
            }
        });
        drop(runtime);
    }
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "panics while runtimes stopped"
    );
}
