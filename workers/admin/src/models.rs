//! `oleg-admin models`.

use crate::table::{age, Table};
use crate::{now_ms, Admin, AdminError, ModelCommand};
use oleg_messages::{HoldoutMetrics, ModelPublished, ModelStatus, ModelVersion, SCHEMA_VERSION};
use oleg_store::ModelRecord;
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
            let model = stored_model(admin, version).await?;
            let version = model.version;
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
        ModelCommand::Rollback { version } => {
            let model = published_model(admin, version).await?;
            if live == Some(model.version) {
                writeln!(out, "model {} is live already", model.version)?;
                return Ok(());
            }
            make_live(admin, &model).await?;
            writeln!(
                out,
                "model {} is live (was {}); rankers follow it, the trainer builds on it next",
                model.version,
                live.map_or("none".into(), |v| v.to_string())
            )?;
            Ok(())
        }
        ModelCommand::Withdraw { version } => {
            let model = published_model(admin, version).await?;
            if live == Some(model.version) {
                let fallback = store
                    .models(i64::MAX)
                    .await?
                    .into_iter()
                    .find(|m| m.status == ModelStatus::Published && m.version < model.version)
                    .ok_or_else(|| {
                        AdminError::BadInput(format!(
                            "model {} is live and no published version before it could take its place",
                            model.version
                        ))
                    })?;
                // The pointer moves first, so it never names a withdrawn version.
                make_live(admin, &fallback).await?;
                writeln!(out, "model {} is live in its place", fallback.version)?;
            }
            store.withdraw_model(model.version).await?;
            writeln!(out, "model {} withdrawn", model.version)?;
            Ok(())
        }
    }
}

async fn stored_model(admin: &Admin, raw: &str) -> Result<ModelRecord, AdminError> {
    let version = raw
        .parse::<i64>()
        .ok()
        .and_then(|v| ModelVersion::new(v).ok())
        .ok_or_else(|| {
            AdminError::BadInput(format!(
                "{raw:?} is not a model version (a positive integer)"
            ))
        })?;
    admin
        .store
        .model(version)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("there is no model version {version}")))
}

/// A version that can serve: published, with its files.
async fn published_model(admin: &Admin, raw: &str) -> Result<ModelRecord, AdminError> {
    let model = stored_model(admin, raw).await?;
    if model.status != ModelStatus::Published {
        return Err(AdminError::BadInput(format!(
            "model {} is {}, not published",
            model.version,
            model.status.as_str()
        )));
    }
    if model.files.is_none() {
        return Err(AdminError::BadInput(format!(
            "model {} has no files (retention removed them)",
            model.version
        )));
    }
    Ok(model)
}

/// Points the live version at `model` and tells the rankers.
async fn make_live(admin: &Admin, model: &ModelRecord) -> Result<(), AdminError> {
    admin.store.set_live_model(model.version).await?;
    let figures = model.figures.clone().unwrap_or_default();
    let holdout = figures.get_document("holdout").ok();
    let figure = |key: &str| holdout.and_then(|h| h.get_f64(key).ok()).unwrap_or(0.0);
    let notice = ModelPublished {
        schema_version: SCHEMA_VERSION,
        version: model.version,
        variant: model
            .variant
            .clone()
            .unwrap_or_else(|| "channel_mlp".into()),
        trained_on_votes: model.trained_on_votes.unwrap_or(0).max(0) as u64,
        holdout: HoldoutMetrics {
            auc: figure("auc"),
            mse: figure("mse"),
            log_loss: figure("log_loss"),
            votes: holdout
                .and_then(|h| oleg_store::as_i64(h.get("votes")))
                .unwrap_or(0)
                .max(0) as u64,
        },
        published_at: chrono::Utc::now(),
    };
    admin.bus.publish(&notice).await?;
    Ok(())
}
