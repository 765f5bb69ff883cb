//! What a person's text asks for, decided without I/O: the bot's `app` performs it.

use oleg_messages::ChannelName;

/// A text message, read as a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/start`: sign up (or resume the digests), onboarding, a first post.
    Start,
    /// `/send_new`: a post now.
    SendNew,
    /// `/stop`: pause the digests.
    Stop,
    /// `/add_channel <name>` from an admin, with a valid name.
    AddChannel(ChannelName),
    /// `/add_channel` from an admin without a usable name: what to tell them.
    AddChannelUsage(String),
    /// `/status` from an admin.
    Status,
    /// An admin command from someone who is not one.
    AdminOnly,
    /// Anything else.
    Help,
}

impl Command {
    /// Reads `text` from a person who is (or is not) an admin. In groups commands come as
    /// `/start@oleg_bot`: the bot's name is dropped.
    pub fn parse(text: &str, is_admin: bool) -> Self {
        let mut words = text.split_whitespace();
        let command = words
            .next()
            .unwrap_or_default()
            .split('@')
            .next()
            .unwrap_or_default();
        let argument = words.next();
        match command {
            "/start" => Command::Start,
            "/send_new" => Command::SendNew,
            "/stop" => Command::Stop,
            "/add_channel" | "/status" if !is_admin => Command::AdminOnly,
            "/add_channel" => match argument.map(ChannelName::parse) {
                Some(Ok(channel)) => Command::AddChannel(channel),
                Some(Err(error)) => {
                    Command::AddChannelUsage(format!("Not a channel name: {error}"))
                }
                None => Command::AddChannelUsage("Usage: /add_channel <channel username>".into()),
            },
            "/status" => Command::Status,
            _ => Command::Help,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_with_or_without_the_bots_name() {
        assert_eq!(Command::parse("/start", false), Command::Start);
        assert_eq!(Command::parse("/start@oleg_bot", false), Command::Start);
        assert_eq!(Command::parse("  /send_new  ", false), Command::SendNew);
        assert_eq!(Command::parse("/stop please", false), Command::Stop);
        assert_eq!(Command::parse("hello", false), Command::Help);
        assert_eq!(Command::parse("", false), Command::Help);
        assert_eq!(Command::parse("/help", true), Command::Help);
    }

    #[test]
    fn admin_commands_are_for_admins_only() {
        assert_eq!(Command::parse("/status", false), Command::AdminOnly);
        assert_eq!(
            Command::parse("/add_channel durov", false),
            Command::AdminOnly
        );
        assert_eq!(Command::parse("/status@oleg_bot", true), Command::Status);
    }

    #[test]
    fn add_channel_needs_a_valid_username() {
        assert_eq!(
            Command::parse("/add_channel durov", true),
            Command::AddChannel(ChannelName::parse("durov").unwrap())
        );
        assert!(matches!(
            Command::parse("/add_channel", true),
            Command::AddChannelUsage(usage) if usage.starts_with("Usage:")
        ));
        assert!(matches!(
            Command::parse("/add_channel no/such name", true),
            Command::AddChannelUsage(reason) if reason.starts_with("Not a channel name")
        ));
    }
}
