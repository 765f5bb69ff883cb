//! `oleg-admin users`: a person's data, exported or forgotten.

use crate::{confirm, Admin, AdminError, UserCommand};
use oleg_messages::UserId;
use serde_json::json;
use std::io::{BufRead, Write};

pub async fn run(
    admin: &Admin,
    command: &UserCommand,
    out: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result<(), AdminError> {
    let store = &admin.store;
    match command {
        UserCommand::Export { id } => {
            let user = user_id(id)?;
            let data = store.person_data(user).await?;
            if data.is_empty() {
                return Err(nobody(user));
            }
            let export = json!({
                "user_id": user.get(),
                "user": data.user,
                "bot_chat": data.chat,
                "votes": data.votes,
                "deliveries": data.deliveries,
            });
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&export).expect("stored records serialize")
            )?;
            Ok(())
        }
        UserCommand::Forget { id, yes } => {
            let user = user_id(id)?;
            if store.person_data(user).await?.is_empty() {
                return Err(nobody(user));
            }
            let question = format!("delete everything stored about person {}?", user.get());
            if !*yes && !confirm(out, input, &question)? {
                return Err(AdminError::Incomplete(
                    "nothing deleted: not confirmed".into(),
                ));
            }
            let gone = store.forget_person(user).await?;
            writeln!(
                out,
                "forgot person {}: {} votes, {} deliveries, {} chat records, {} person records deleted; \
                 their row in the model is reset at the next full retraining",
                user.get(),
                gone.votes,
                gone.deliveries,
                gone.chats,
                gone.users
            )?;
            Ok(())
        }
    }
}

fn user_id(raw: &str) -> Result<UserId, AdminError> {
    raw.parse::<i64>()
        .ok()
        .and_then(|id| UserId::new(id).ok())
        .ok_or_else(|| {
            AdminError::BadInput(format!("{raw:?} is not a user id (a positive integer)"))
        })
}

fn nobody(user: UserId) -> AdminError {
    AdminError::NotFound(format!("nothing is stored about person {}", user.get()))
}
