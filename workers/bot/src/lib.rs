//! `oleg-bot`: OLEG's Telegram bot frontend. It shows each person one post at a time with 👍 / 👎
//! buttons, publishes their votes, asks the ranker for the next post, and sends digests at set
//! times. It speaks to the Telegram Bot API through teloxide and to the rest of OLEG only through
//! the queues and messages of `schemas/`; its own state is the `bot_chats` collection.

pub mod app;
pub mod callback;
pub mod chats;
pub mod dispatch;
pub mod flood;
pub mod inbox;
pub mod metrics;
pub mod render;
pub mod serve;
pub mod settings;
pub mod stopwatch;
pub mod telegram;

pub use app::{BotApp, DigestSummary};
pub use settings::BotConfig;
