//! A run's votes and posts, written as `oleg-trainer eval` reads them: `votes.csv`
//! (user,post,channel,vote,voted_at_ms) and `posts.jsonl` (one scraped-post message per line),
//! so a model can be judged offline on what the simulated people did.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use oleg_messages::{ChannelName, MediaItem, PostId, ScrapedPost, SCHEMA_VERSION};
use oleg_store::{as_i64, post_content, Store};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes both files into `dir`; returns their paths (votes, posts).
pub async fn export(store: &Store, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let read = |collection: &'static str| async move {
        store
            .database()
            .collection::<Document>(collection)
            .find(doc! {})
            .await?
            .try_collect::<Vec<Document>>()
            .await
    };
    let (votes_path, posts_path) = (dir.join("votes.csv"), dir.join("posts.jsonl"));
    let mut votes = std::io::BufWriter::new(std::fs::File::create(&votes_path)?);
    writeln!(votes, "user,post,channel,vote,voted_at_ms")?;
    let mut rows: Vec<(i64, i64, i64, String, u8)> = read("votes")
        .await?
        .iter()
        .filter_map(|d| {
            Some((
                as_i64(d.get("voted_at_ms"))?,
                as_i64(d.get("user_id"))?,
                as_i64(d.get("post_id"))?,
                d.get_str("channel").ok()?.to_owned(),
                u8::from(d.get_str("reaction").ok()? == "like"),
            ))
        })
        .collect();
    rows.sort();
    for (at, user, post, channel, vote) in rows {
        writeln!(votes, "{user},{post},{channel},{vote},{at}")?;
    }
    votes.flush()?;

    let documents = read("posts").await?;
    let mut posts = std::io::BufWriter::new(std::fs::File::create(&posts_path)?);
    let time = |d: &Document, key| {
        as_i64(d.get(key))
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .unwrap_or_default()
    };
    for document in &documents {
        let (Ok(channel), Some(Ok(post_id))) = (
            ChannelName::parse(document.get_str("channel").unwrap_or_default()),
            as_i64(document.get("post_id")).map(PostId::new),
        ) else {
            continue;
        };
        let content = post_content(document);
        let post = ScrapedPost {
            schema_version: SCHEMA_VERSION,
            channel,
            post_id,
            published_at: time(document, "published_at_ms"),
            text: content.text,
            links: content.links,
            views: content.views,
            page_median_views: content.page_median_views,
            media: content
                .media
                .iter()
                .map(|&kind| MediaItem { kind, url: None })
                .collect(),
            forwarded_from: content.forwarded_from,
            reply_to: None,
            scraped_at: time(document, "scraped_at_ms"),
        };
        writeln!(posts, "{}", serde_json::to_string(&post)?)?;
    }
    posts.flush()?;
    Ok((votes_path, posts_path))
}
