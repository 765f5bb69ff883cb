//! A lease: at most one holder at a time, lost if its holder stops renewing it.

use crate::{Store, StoreError, DUPLICATE_KEY};
use mongodb::bson::doc;
use mongodb::error::ErrorKind;

const LEASES: &str = "leases";

impl Store {
    /// Takes or renews the lease `name` for `holder` until `now_ms + ttl_ms`. Returns whether
    /// `holder` holds it now. Three steps, each a single-document write, so no transaction is
    /// needed: renew our own; take an expired one; create a missing one (a duplicate key means
    /// someone else created it first).
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let leases = self
            .database()
            .collection::<mongodb::bson::Document>(LEASES);
        let expires = doc! {"$set": {"holder": holder, "expires_at_ms": now_ms + ttl_ms}};
        let renewed = leases
            .update_one(
                doc! {"_id": {"$eq": name}, "holder": {"$eq": holder}},
                expires.clone(),
            )
            .await?;
        if renewed.matched_count > 0 {
            return Ok(true);
        }
        let taken = leases
            .update_one(
                doc! {"_id": {"$eq": name}, "expires_at_ms": {"$lt": now_ms}},
                expires,
            )
            .await?;
        if taken.matched_count > 0 {
            return Ok(true);
        }
        match leases
            .insert_one(doc! {"_id": name, "holder": holder, "expires_at_ms": now_ms + ttl_ms})
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Gives the lease up if `holder` has it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.database()
            .collection::<mongodb::bson::Document>(LEASES)
            .update_one(
                doc! {"_id": {"$eq": name}, "holder": {"$eq": holder}},
                doc! {"$set": {"expires_at_ms": 0_i64}},
            )
            .await?;
        Ok(())
    }
}

pub(crate) fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}
