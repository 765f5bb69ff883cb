//! `oleg-admin status`: what an operator looks at first on a bad day.

use crate::table::{age, Table};
use crate::{now_ms, Admin, AdminError};
use oleg_bus::{DeadLetterQueue, QueueName};
use std::collections::BTreeMap;
use std::io::Write;

pub async fn show(admin: &Admin, out: &mut dyn Write) -> Result<(), AdminError> {
    let now = now_ms();
    let mut queues = Table::new(&["QUEUE", "READY", "CONSUMERS"]);
    for queue in QueueName::ALL {
        let state = admin.bus.queue_state(queue).await?;
        queues.row(vec![
            admin.bus.topology().queue(queue),
            state.ready.to_string(),
            state.consumers.to_string(),
        ]);
    }
    queues.write(out)?;

    let letters = DeadLetterQueue::take(&admin.bus, crate::dead_letters::MOST_LETTERS).await?;
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for letter in &letters.letters {
        *reasons.entry(letter.reason.as_str()).or_default() += 1;
    }
    let by_reason: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
    writeln!(out)?;
    writeln!(
        out,
        "dead letters: {}{}",
        letters.letters.len(),
        if by_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_reason.join(", "))
        }
    )?;
    letters.release().await;

    let store = &admin.store;
    match store.live_model().await? {
        Some(model) => writeln!(
            out,
            "live model: version {}, {} old",
            model.version,
            age(now, model.created_at_ms)
        )?,
        None => writeln!(out, "live model: none yet (cold-start ranking)")?,
    }
    let channels = store.channels().await?;
    let in_state = |state| channels.iter().filter(|c| c.state() == state).count();
    let followed = format!(
        "channels: {} followed ({} paused, {} missing)",
        channels.len(),
        in_state("paused"),
        in_state("missing")
    );
    match channels.iter().filter_map(|c| c.polled_at_ms).max() {
        Some(at) => writeln!(out, "{followed}, last fetch {} ago", age(now, at))?,
        None => writeln!(out, "{followed}, none fetched yet")?,
    }
    match store.newest_vote_ingested_ms().await? {
        Some(at) => writeln!(out, "newest vote stored {} ago", age(now, at))?,
        None => writeln!(out, "no vote stored yet")?,
    }
    Ok(())
}
