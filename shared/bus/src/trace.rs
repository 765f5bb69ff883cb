//! Following one message through the workers. Every publish carries a trace id (header
//! `x-oleg-trace`) and a message id of its own: the trace id of the work that published it, or a
//! new one. A consumer handles each delivery inside a span named after the message, with the
//! trace id as a field (`trace=…` in every log line of that work) and as the trace of whatever
//! it publishes meanwhile — also on other threads ([`in_trace`] around `spawn_blocking`).

use crate::Incoming;
use lapin::types::AMQPValue;
use std::future::Future;

/// Header carrying a message's trace id.
pub const TRACE_HEADER: &str = "x-oleg-trace";

tokio::task_local! {
    static TRACE: String;
}

/// A new trace id (what a frontend starts for each thing a person does).
pub fn new_trace() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The trace of the work in progress on this task, if any.
pub fn current_trace() -> Option<String> {
    TRACE.try_with(Clone::clone).ok()
}

/// Runs `work` as part of trace `id`: what it publishes carries the id.
pub async fn traced<F: Future>(id: String, work: F) -> F::Output {
    TRACE.scope(id, work).await
}

/// Runs blocking `work` as part of trace `id`, in `span` (for `spawn_blocking`).
pub fn in_trace<T>(id: Option<String>, span: tracing::Span, work: impl FnOnce() -> T) -> T {
    let _entered = span.enter();
    match id {
        Some(id) => TRACE.sync_scope(id, work),
        None => work(),
    }
}

impl Incoming {
    /// The trace this message belongs to: its `x-oleg-trace` header, else its message id.
    pub fn trace_id(&self) -> String {
        let header = self
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(TRACE_HEADER).cloned());
        match header {
            Some(AMQPValue::LongString(id)) => id.to_string(),
            _ => self
                .properties
                .message_id()
                .as_ref()
                .map_or_else(new_trace, |id| id.to_string()),
        }
    }

    /// The span its handling runs in.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "message",
            trace = %self.trace_id(),
            queue = %self.queue,
            key = %self.routing_key,
            attempt = self.attempt(),
        )
    }
}
