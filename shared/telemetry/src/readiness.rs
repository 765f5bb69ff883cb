use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A dependency a worker needs to do its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Broker,
    Store,
    Model,
    /// Where RPC replies arrive (a client of the ranker, such as the bot).
    ReplyPath,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Broker => "broker",
            Component::Store => "store",
            Component::Model => "model",
            Component::ReplyPath => "reply_path",
        }
    }
}

/// Which of a worker's dependencies are up; `/readyz` is 200 only when all are.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    components: Arc<BTreeMap<Component, AtomicBool>>,
}

impl Readiness {
    /// Tracks `components`, all of them down until set.
    pub fn new(components: &[Component]) -> Self {
        Self {
            components: Arc::new(
                components
                    .iter()
                    .map(|c| (*c, AtomicBool::new(false)))
                    .collect(),
            ),
        }
    }

    pub fn set(&self, component: Component, up: bool) {
        if let Some(flag) = self.components.get(&component) {
            flag.store(up, Ordering::SeqCst);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.components.values().all(|f| f.load(Ordering::SeqCst))
    }

    /// `{"broker": true, "store": false}`
    pub fn report(&self) -> serde_json::Value {
        self.components
            .iter()
            .map(|(c, f)| {
                (
                    c.as_str().to_owned(),
                    serde_json::Value::Bool(f.load(Ordering::SeqCst)),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}
