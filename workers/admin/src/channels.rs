//! `oleg-admin channels`: through the store, which the scraper reads its due channels from, so a
//! change takes effect at its next look, without a restart.

use crate::table::{age, Table};
use crate::{now_ms, Admin, AdminError, ChannelCommand};
use oleg_messages::ChannelName;
use std::io::Write;

pub async fn run(
    admin: &Admin,
    command: &ChannelCommand,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let store = &admin.store;
    let now = now_ms();
    match command {
        ChannelCommand::List => {
            let posts = store.posts_per_channel().await?;
            let mut table = Table::new(&[
                "CHANNEL",
                "STATE",
                "LAST FETCH",
                "NEXT POLL",
                "POSTS",
                "FAILURES",
                "TITLE",
            ]);
            for channel in store.channels().await? {
                let next = if channel.paused() {
                    channel.paused_at_ms.map_or("never".to_owned(), |at| {
                        format!("never (paused {} ago)", age(now, at))
                    })
                } else if channel.next_poll_ms <= now {
                    "due".to_owned()
                } else {
                    format!("in {}", age(channel.next_poll_ms, now))
                };
                table.row(vec![
                    channel.name.clone(),
                    channel.state().to_owned(),
                    channel
                        .polled_at_ms
                        .map_or("never".into(), |at| format!("{} ago", age(now, at))),
                    next,
                    posts.get(&channel.name).copied().unwrap_or(0).to_string(),
                    channel.failures.to_string(),
                    channel.title.clone().unwrap_or_default(),
                ]);
            }
            table.write(out)?;
            Ok(())
        }
        ChannelCommand::Follow { name } => {
            let name = channel_name(name)?;
            if store.add_channel(&name, now).await? {
                writeln!(out, "following {name}: polled at once")?;
            } else {
                writeln!(out, "{name} was followed already")?;
            }
            Ok(())
        }
        ChannelCommand::Unfollow { name } => {
            let name = channel_name(name)?;
            if !store.remove_channel(&name, now).await? {
                return Err(not_followed(&name));
            }
            writeln!(
                out,
                "no longer following {name}; its posts stay stored but are no longer recommended"
            )?;
            Ok(())
        }
        ChannelCommand::Retry { name, .. } => {
            let name = name.as_deref().map(channel_name).transpose()?;
            let retried = store.retry_missing_channels(name.as_deref(), now).await?;
            match name {
                Some(name) if retried == 0 => {
                    return Err(match store.channel(&name).await? {
                        None => not_followed(&name),
                        Some(channel) => AdminError::BadInput(format!(
                            "{name} is {}, not missing",
                            channel.state()
                        )),
                    });
                }
                Some(name) => writeln!(out, "{name}: polled at once")?,
                None => writeln!(out, "{retried} missing channels: polled at once")?,
            }
            Ok(())
        }
        ChannelCommand::Pause { name } | ChannelCommand::Resume { name } => {
            let name = channel_name(name)?;
            let pause = matches!(command, ChannelCommand::Pause { .. });
            if !store.set_channel_paused(&name, pause, now).await? {
                return Err(not_followed(&name));
            }
            writeln!(
                out,
                "{name} {}",
                if pause {
                    "paused"
                } else {
                    "resumed: polled at once"
                }
            )?;
            Ok(())
        }
    }
}

fn channel_name(raw: &str) -> Result<String, AdminError> {
    let raw = raw.trim_start_matches('@');
    ChannelName::parse(raw)
        .map(|name| name.as_str().to_owned())
        .map_err(|error| AdminError::BadInput(format!("{raw:?} is not a channel name: {error}")))
}

fn not_followed(name: &str) -> AdminError {
    AdminError::NotFound(format!("{name} is not followed"))
}
