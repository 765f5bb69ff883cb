//! People, created on first sight.

use crate::{run_update, Collections, Store, StoreError};
use mongodb::bson::{doc, Bson, Document};
use oleg_messages::UserId;

/// A person seen at `at_ms`: from a start message (with its details) or from a vote.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSighting {
    pub user_id: UserId,
    pub at_ms: i64,
    /// `true` for a start message.
    pub started: bool,
    pub language_code: Option<String>,
}

impl Store {
    /// Creates each person not yet stored; a start also records when (the earliest start wins,
    /// so redeliveries change nothing). Returns how many people were new.
    pub async fn upsert_users(&self, sightings: &[UserSighting]) -> Result<u64, StoreError> {
        if sightings.is_empty() {
            return Ok(0);
        }
        let updates: Vec<Document> = sightings
            .iter()
            .map(|s| {
                let mut update = doc! {"$min": {"first_seen_ms": s.at_ms}};
                if s.started {
                    update.get_document_mut("$min").expect("set above").insert("started_at_ms", s.at_ms);
                    if let Some(language) = &s.language_code {
                        update.insert("$set", doc! {"language_code": language});
                    }
                }
                doc! {"q": {"_id": {"$eq": s.user_id.get()}}, "u": update, "upsert": true, "multi": false}
            })
            .collect();
        let reply = run_update(self.database(), Collections::USERS, updates).await?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            // Two sightings of one new person in a batch may race to insert: the loser is a
            // duplicate key, and the winner already created the person.
            let other: Vec<String> = errors
                .iter()
                .filter_map(Bson::as_document)
                .filter(|e| e.get_i32("code").ok() != Some(crate::DUPLICATE_KEY))
                .map(|e| e.to_string())
                .collect();
            if !other.is_empty() {
                return Err(StoreError::WriteErrors {
                    command: "update users",
                    detail: other.join("; "),
                });
            }
        }
        Ok(reply
            .get_array("upserted")
            .map(|u| u.len() as u64)
            .unwrap_or(0))
    }
}
