//! People, created on first sight.

use crate::{run_update, Collections, Store, StoreError};
use mongodb::bson::{doc, Document};
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
        // A duplicate key means two sightings of one new person raced to insert it: the
        // winner created the person.
        let done = run_update(self.database(), Collections::USERS, updates).await?;
        Ok(done.upserted.len() as u64)
    }
}
