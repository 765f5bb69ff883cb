//! `oleg-admin models`.

use crate::table::{age, Table};
use crate::{now_ms, Admin, AdminError, ModelCommand};
use oleg_messages::ModelVersion;
use std::io::Write;

pub async fn run(
    admin: &Admin,
    command: &ModelCommand,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let store = &admin.store;
    let live = store.live_version().await?;
    let now = now_ms();
    match command {
        ModelCommand::List { limit } => {
            if *limit < 1 {
                return Err(AdminError::BadInput(format!("--limit {limit}: at least 1")));
            }
            let mut table = Table::new(&[
                "VERSION",
                "STATUS",
                "LIVE",
                "AGE",
                "KIND",
                "VOTES",
                "HOLDOUT AUC",
                "BYTES",
            ]);
            for model in store.models(*limit).await? {
                let figures = model.figures.clone().unwrap_or_default();
                let auc = figures
                    .get_document("holdout")
                    .ok()
                    .and_then(|h| h.get_f64("auc").ok())
                    .map_or(String::new(), |a| format!("{a:.4}"));
                let bytes = model.files.as_ref().map_or(String::new(), |f| {
                    f.named()
                        .iter()
                        .map(|(_, s)| s.bytes)
                        .sum::<i64>()
                        .to_string()
                });
                table.row(vec![
                    model.version.to_string(),
                    model.status.as_str().to_owned(),
                    if live == Some(model.version) {
                        "live".into()
                    } else {
                        String::new()
                    },
                    age(now, model.created_at_ms),
                    figures.get_str("kind").unwrap_or_default().to_owned(),
                    model
                        .trained_on_votes
                        .map_or(String::new(), |v| v.to_string()),
                    auc,
                    bytes,
                ]);
            }
            table.write(out)?;
            Ok(())
        }
        ModelCommand::Show { version } => {
            let version = version
                .parse::<i64>()
                .ok()
                .and_then(|v| ModelVersion::new(v).ok())
                .ok_or_else(|| {
                    AdminError::BadInput(format!(
                        "{version:?} is not a model version (a positive integer)"
                    ))
                })?;
            let model = store.model(version).await?.ok_or_else(|| {
                AdminError::NotFound(format!("there is no model version {version}"))
            })?;
            let mut document =
                serde_json::to_value(&model).map_err(|e| AdminError::BadInput(e.to_string()))?;
            document["live"] = serde_json::Value::Bool(live == Some(version));
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&document)
                    .map_err(|e| AdminError::BadInput(e.to_string()))?
            )?;
            Ok(())
        }
    }
}
