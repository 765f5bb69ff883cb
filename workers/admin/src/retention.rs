//! `oleg-admin retention run`.

use crate::{now_ms, Admin, AdminError, RetentionCommand};
use oleg_store::RetentionPolicy;
use std::io::Write;

const DAY_MS: i64 = 86_400_000;

pub async fn run(
    admin: &Admin,
    command: &RetentionCommand,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let RetentionCommand::Run { dry_run } = command;
    let settings = &admin.retention;
    let now = now_ms();
    let policy = RetentionPolicy {
        deliveries_before_ms: now - i64::from(settings.delivery_days) * DAY_MS,
        unvoted_posts_before_ms: now - i64::from(settings.unvoted_post_days) * DAY_MS,
        keep_models: settings.keep_models as usize,
    };
    let report = admin.store.apply_retention(&policy, *dry_run).await?;
    let verb = if *dry_run { "would remove" } else { "removed" };
    writeln!(
        out,
        "{verb} {} deliveries older than {} days",
        report.deliveries, settings.delivery_days
    )?;
    writeln!(
        out,
        "{verb} {} posts nobody voted on, older than {} days",
        report.posts, settings.unvoted_post_days
    )?;
    let versions: Vec<String> = report.model_files.iter().map(|v| v.to_string()).collect();
    writeln!(
        out,
        "{verb} the files of {} model versions{} (kept: the newest {} published, the live one and its rollback target)",
        versions.len(),
        if versions.is_empty() { String::new() } else { format!(" ({})", versions.join(", ")) },
        settings.keep_models
    )?;
    Ok(())
}
