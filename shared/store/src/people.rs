//! Everything stored about one person, for an export, or to forget them.

use crate::{Collections, DeliveryRecord, Store, StoreError, UserRecord, VoteRecord};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use oleg_messages::UserId;

/// A person's stored data: their record, the bot's chat record, their votes and the posts sent.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonData {
    pub user: Option<UserRecord>,
    pub chat: Option<Document>,
    pub votes: Vec<VoteRecord>,
    pub deliveries: Vec<DeliveryRecord>,
}

impl PersonData {
    pub fn is_empty(&self) -> bool {
        self.user.is_none()
            && self.chat.is_none()
            && self.votes.is_empty()
            && self.deliveries.is_empty()
    }
}

/// What forgetting a person deleted, per collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub votes: u64,
    pub deliveries: u64,
    pub chats: u64,
    pub users: u64,
}

impl Store {
    pub async fn person_data(&self, user: UserId) -> Result<PersonData, StoreError> {
        let collections = self.collections();
        let id = user.get();
        Ok(PersonData {
            user: collections
                .users
                .find_one(doc! {"_id": {"$eq": id}})
                .await?,
            chat: self
                .database()
                .collection::<Document>(Collections::BOT_CHATS)
                .find_one(doc! {"_id": {"$eq": id}})
                .await?,
            votes: collections
                .votes
                .find(doc! {"user_id": {"$eq": id}})
                .await?
                .try_collect()
                .await?,
            deliveries: collections
                .deliveries
                .find(doc! {"user_id": {"$eq": id}})
                .await?
                .try_collect()
                .await?,
        })
    }

    /// Deletes the person's votes, deliveries, chat record and then the person (last, so that a
    /// forget cut short is simply run again). Their row in the live model is reset at the next
    /// full retraining; a person who comes back starts with nothing.
    pub async fn forget_person(&self, user: UserId) -> Result<Forgotten, StoreError> {
        let collections = self.collections();
        let id = user.get();
        let by_user = doc! {"user_id": {"$eq": id}};
        let by_id = doc! {"_id": {"$eq": id}};
        Ok(Forgotten {
            votes: collections
                .votes
                .delete_many(by_user.clone())
                .await?
                .deleted_count,
            deliveries: collections
                .deliveries
                .delete_many(by_user)
                .await?
                .deleted_count,
            chats: self
                .database()
                .collection::<Document>(Collections::BOT_CHATS)
                .delete_many(by_id.clone())
                .await?
                .deleted_count,
            users: collections.users.delete_many(by_id).await?.deleted_count,
        })
    }
}
