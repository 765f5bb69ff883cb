//! `oleg-admin dead-letters`.

use crate::table::{age, preview, Table};
use crate::{now_ms, Admin, AdminError, DeadLetterCommand, LetterFilter};
use oleg_bus::{DeadLetterQueue, HeldLetter};
use std::io::{BufRead, Write};

/// Most dead letters one command takes from the queue (the queue's bound, see OPERATIONS.md).
pub(crate) const MOST_LETTERS: usize = 100_000;

impl LetterFilter {
    fn matches(&self, letter: &HeldLetter, now_ms: i64) -> bool {
        let queue_matches = |wanted: &String| {
            letter.queue == *wanted || letter.queue.rsplit('.').next() == Some(wanted.as_str())
        };
        self.reason.as_ref().is_none_or(|r| letter.reason == *r)
            && self.queue.as_ref().is_none_or(queue_matches)
            && self.id.as_ref().is_none_or(|id| letter.id == *id)
            && self.since.is_none_or(|since| {
                letter
                    .failed_at_ms
                    .is_some_and(|at| now_ms - at <= since.as_millis() as i64)
            })
    }
}

pub async fn run(
    admin: &Admin,
    command: &DeadLetterCommand,
    out: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result<(), AdminError> {
    let queue = DeadLetterQueue::take(&admin.bus, MOST_LETTERS).await?;
    // Whatever happens, the letters not removed go back to the queue.
    let done = handle(&queue, command, out, input).await;
    queue.release().await;
    done
}

async fn handle(
    queue: &DeadLetterQueue,
    command: &DeadLetterCommand,
    out: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result<(), AdminError> {
    let now = now_ms();
    let selected = |filter: &LetterFilter| -> Vec<&HeldLetter> {
        queue
            .letters
            .iter()
            .filter(|l| filter.matches(l, now))
            .collect()
    };
    match command {
        DeadLetterCommand::List { filter } => {
            let mut table = Table::new(&[
                "ID", "REASON", "QUEUE", "ATTEMPTS", "REPLAYS", "AGE", "SIZE", "PREVIEW",
            ]);
            let letters = selected(filter);
            for letter in &letters {
                table.row(vec![
                    letter.id.clone(),
                    letter.reason.clone(),
                    letter.queue.clone(),
                    letter.attempts.to_string(),
                    letter.replays.to_string(),
                    letter.failed_at_ms.map_or("?".into(), |at| age(now, at)),
                    letter.body.len().to_string(),
                    preview(&String::from_utf8_lossy(&letter.body), 60),
                ]);
            }
            table.write(out)?;
            writeln!(
                out,
                "{} of {} dead letters",
                letters.len(),
                queue.letters.len()
            )?;
            Ok(())
        }
        DeadLetterCommand::Show { id } => {
            let letter = queue
                .letters
                .iter()
                .find(|l| l.id == *id)
                .ok_or_else(|| AdminError::NotFound(format!("no dead letter with id {id}")))?;
            writeln!(out, "id:          {}", letter.id)?;
            writeln!(out, "reason:      {}", letter.reason)?;
            writeln!(out, "detail:      {}", letter.detail)?;
            writeln!(out, "queue:       {}", letter.queue)?;
            writeln!(out, "attempts:    {}", letter.attempts)?;
            writeln!(out, "replays:     {}", letter.replays)?;
            let failed = letter.failed_at_ms.map_or("unknown".into(), |at| {
                format!(
                    "{} ({} ago)",
                    chrono::DateTime::from_timestamp_millis(at)
                        .map_or(at.to_string(), |t| t.to_rfc3339()),
                    age(now, at)
                )
            });
            writeln!(out, "failed at:   {failed}")?;
            writeln!(
                out,
                "replays to:  exchange {:?}, routing key {:?}",
                letter.exchange, letter.routing_key
            )?;
            writeln!(out, "body ({} bytes):", letter.body.len())?;
            writeln!(out, "{}", String::from_utf8_lossy(&letter.body))?;
            Ok(())
        }
        DeadLetterCommand::Replay {
            filter,
            dry_run,
            max_replays,
        } => {
            let (mut replayed, mut problems) = (0, Vec::new());
            for letter in selected(filter) {
                if letter.replays >= *max_replays {
                    problems.push(format!(
                        "{}: replayed {} times already (--max-replays {max_replays}); left",
                        letter.id, letter.replays
                    ));
                    continue;
                }
                if *dry_run {
                    writeln!(
                        out,
                        "would replay {} ({}) to {:?} / {:?}",
                        letter.id, letter.reason, letter.exchange, letter.routing_key
                    )?;
                    continue;
                }
                match queue.replay(letter).await {
                    Ok(()) => {
                        replayed += 1;
                        writeln!(
                            out,
                            "replayed {} to {:?} / {:?}",
                            letter.id, letter.exchange, letter.routing_key
                        )?;
                    }
                    Err(error) => problems.push(format!("{}: {error}; left", letter.id)),
                }
            }
            for problem in &problems {
                writeln!(out, "{problem}")?;
            }
            if !*dry_run {
                writeln!(out, "{replayed} replayed, {} left", problems.len())?;
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(AdminError::Incomplete(format!(
                    "{} dead letters were not replayed",
                    problems.len()
                )))
            }
        }
        DeadLetterCommand::Purge { filter, yes } => {
            let letters = selected(filter);
            if letters.is_empty() {
                writeln!(out, "no dead letter matches")?;
                return Ok(());
            }
            if !*yes
                && !crate::confirm(
                    out,
                    input,
                    &format!("remove {} dead letters for good?", letters.len()),
                )?
            {
                return Err(AdminError::Incomplete(
                    "nothing removed: not confirmed".into(),
                ));
            }
            for letter in &letters {
                queue.remove(letter).await?;
            }
            writeln!(out, "{} dead letters removed", letters.len())?;
            Ok(())
        }
    }
}
