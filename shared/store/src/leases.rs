//! A lease: at most one holder at a time, lost if its holder stops renewing it. Expiry is judged
//! by the store's clock ([`Store::store_time_ms`]), never a holder's own. Each taking of a lease
//! increments its fencing token: a holder that was paused past its expiry and resumes holds an
//! old token, and every write fenced by the lease checks it.

use crate::{Store, StoreError, DUPLICATE_KEY};
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::options::ReturnDocument;

pub(crate) const LEASES: &str = "leases";

/// A lease as its holder has it: who, and the token of this taking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseClaim {
    pub name: String,
    pub holder: String,
    pub token: i64,
}

impl Store {
    /// The store's own clock, in Unix milliseconds (`hello`'s `localTime`): what every holder's
    /// lease expiry is judged by, so holders' clocks need not agree.
    pub async fn store_time_ms(&self) -> Result<i64, StoreError> {
        let hello = self.database().run_command(doc! {"hello": 1}).await?;
        match hello.get("localTime") {
            Some(Bson::DateTime(at)) => Ok(at.timestamp_millis()),
            other => Err(StoreError::Shape(format!("hello.localTime is {other:?}"))),
        }
    }

    /// Takes or renews the lease `name` for `holder` until `now_ms + ttl_ms` (`now_ms` from
    /// [`store_time_ms`](Self::store_time_ms)). Three steps, each a single-document write, so no
    /// transaction is needed: renew our own (same token); take an expired one (the next token);
    /// create a missing one (token 1; a duplicate key means someone else created it first).
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<LeaseClaim>, StoreError> {
        let leases = self.database().collection::<Document>(LEASES);
        let claim = |document: Option<Document>| {
            document
                .and_then(|d| crate::as_i64(d.get("token")))
                .map(|token| LeaseClaim {
                    name: name.to_owned(),
                    holder: holder.to_owned(),
                    token,
                })
        };
        let until = now_ms + ttl_ms;
        let renewed = leases
            .find_one_and_update(
                doc! {"_id": {"$eq": name}, "holder": {"$eq": holder}, "expires_at_ms": {"$gte": now_ms}},
                doc! {"$set": {"expires_at_ms": until}},
            )
            .return_document(ReturnDocument::After)
            .await?;
        if let Some(claim) = claim(renewed) {
            return Ok(Some(claim));
        }
        let taken = leases
            .find_one_and_update(
                doc! {"_id": {"$eq": name}, "expires_at_ms": {"$lt": now_ms}},
                doc! {"$set": {"holder": holder, "expires_at_ms": until}, "$inc": {"token": 1_i64}},
            )
            .return_document(ReturnDocument::After)
            .await?;
        if let Some(claim) = claim(taken) {
            return Ok(Some(claim));
        }
        match leases
            .insert_one(
                doc! {"_id": name, "holder": holder, "token": 1_i64, "expires_at_ms": until},
            )
            .await
        {
            Ok(_) => Ok(claim(Some(doc! {"token": 1_i64}))),
            Err(error) if is_duplicate_key(&error) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Extends a held lease to `now_ms + ttl_ms`; `false` if it is no longer this claim's (taken
    /// over with a newer token, or expired).
    pub async fn renew_lease(
        &self,
        claim: &LeaseClaim,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let renewed = self
            .database()
            .collection::<Document>(LEASES)
            .update_one(
                held(claim, now_ms),
                doc! {"$set": {"expires_at_ms": now_ms + ttl_ms}},
            )
            .await?;
        Ok(renewed.matched_count == 1)
    }

    /// Whether the claim still holds the lease, by the store's clock now.
    pub async fn holds_lease(&self, claim: &LeaseClaim) -> Result<bool, StoreError> {
        let now_ms = self.store_time_ms().await?;
        Ok(self
            .database()
            .collection::<Document>(LEASES)
            .find_one(held(claim, now_ms))
            .await?
            .is_some())
    }

    /// Gives the lease up if the claim still has it.
    pub async fn release_lease(&self, claim: &LeaseClaim) -> Result<(), StoreError> {
        self.database()
            .collection::<Document>(LEASES)
            .update_one(
                doc! {"_id": {"$eq": &claim.name}, "holder": {"$eq": &claim.holder}, "token": {"$eq": claim.token}},
                doc! {"$set": {"expires_at_ms": 0_i64}},
            )
            .await?;
        Ok(())
    }
}

/// The lease document as long as `claim` holds it at `now_ms`.
pub(crate) fn held(claim: &LeaseClaim, now_ms: i64) -> Document {
    doc! {
        "_id": {"$eq": &claim.name},
        "holder": {"$eq": &claim.holder},
        "token": {"$eq": claim.token},
        "expires_at_ms": {"$gte": now_ms},
    }
}

pub(crate) fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}
