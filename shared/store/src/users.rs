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

/// What a batch of sightings did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UserWrites {
    /// People stored for the first time.
    pub created: u64,
    /// Sightings the store refused (by index), with its message.
    pub refused: Vec<(usize, String)>,
}

impl Store {
    /// Creates each person not yet stored; a start also records when (the earliest start wins,
    /// so redeliveries change nothing).
    pub async fn upsert_users(&self, sightings: &[UserSighting]) -> Result<UserWrites, StoreError> {
        if sightings.is_empty() {
            return Ok(UserWrites::default());
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
        Ok(UserWrites {
            created: done.upserted.len() as u64,
            refused: done.refused,
        })
    }
}
