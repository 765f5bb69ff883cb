//! How a post looks in the chat: its text (cut to a length Telegram accepts, HTML-escaped), a
//! "Source: @channel" link to the original with its link preview, and the 👍 / 👎 buttons.

use oleg_messages::{PostRef, Reaction};
use teloxide_core::types::{InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions};

pub const LIKE: &str = "👍";
pub const DISLIKE: &str = "👎";

/// `https://t.me/<channel>/<id>`.
pub fn post_url(post: &PostRef) -> String {
    format!("https://t.me/{}/{}", post.channel, post.post_id)
}

/// The message body in Telegram's HTML mode.
pub fn post_html(post: &PostRef, text: &str, max_chars: usize) -> String {
    let text = text.trim();
    let shown = if text.chars().count() > max_chars {
        let cut: String = text.chars().take(max_chars).collect();
        format!("{}…", cut.trim_end())
    } else {
        text.to_owned()
    };
    let source = format!(
        "Source: <a href=\"{}\">@{}</a>",
        post_url(post),
        escape(post.channel.as_str())
    );
    if shown.is_empty() {
        source
    } else {
        format!("{}\n\n{source}", escape(&shown))
    }
}

/// The preview of the original post, under the text.
pub fn preview(post: &PostRef) -> LinkPreviewOptions {
    LinkPreviewOptions {
        is_disabled: false,
        url: Some(post_url(post)),
        prefer_small_media: false,
        prefer_large_media: true,
        show_above_text: false,
    }
}

/// The mark on the button a person chose.
const CHOSEN: &str = " ✓";

/// The 👍 / 👎 row; `chosen` is marked once the person voted.
pub fn vote_buttons(
    like_data: String,
    dislike_data: String,
    chosen: Option<Reaction>,
) -> InlineKeyboardMarkup {
    let label = |emoji: &str, reaction: Reaction| {
        if chosen == Some(reaction) {
            format!("{emoji}{CHOSEN}")
        } else {
            emoji.to_owned()
        }
    };
    InlineKeyboardMarkup::new([[
        InlineKeyboardButton::callback(label(LIKE, Reaction::Like), like_data),
        InlineKeyboardButton::callback(label(DISLIKE, Reaction::Dislike), dislike_data),
    ]])
}

/// Whether a post's buttons already show a vote: pressing again changes that vote rather than
/// asking for another post.
pub fn shows_a_vote(markup: Option<&InlineKeyboardMarkup>) -> bool {
    markup.is_some_and(|markup| {
        markup
            .inline_keyboard
            .iter()
            .flatten()
            .any(|button| button.text.ends_with(CHOSEN))
    })
}

/// Escapes text for Telegram's HTML parse mode (only `<`, `>` and `&` are special).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oleg_messages::{ChannelName, PostId};

    fn post() -> PostRef {
        PostRef {
            channel: ChannelName::parse("campcode").unwrap(),
            post_id: PostId::new(2374).unwrap(),
        }
    }

    #[test]
    fn text_is_escaped_cut_and_followed_by_its_source() {
        let html = post_html(&post(), "a <b>bold</b> & free offer", 100);
        assert_eq!(
            html,
            "a &lt;b&gt;bold&lt;/b&gt; &amp; free offer\n\nSource: <a href=\"https://t.me/campcode/2374\">@campcode</a>"
        );
        let long = "слово ".repeat(1000);
        let html = post_html(&post(), &long, 120);
        let body = html.split("\n\n").next().unwrap();
        assert_eq!(body.chars().count(), 120, "{body}");
        assert!(body.ends_with('…'));
        assert!(post_html(&post(), "  ", 100).starts_with("Source:"));
    }

    #[test]
    fn the_chosen_button_is_marked() {
        let markup = vote_buttons("l".into(), "d".into(), Some(Reaction::Dislike));
        let row = &markup.inline_keyboard[0];
        assert_eq!((row[0].text.as_str(), row[1].text.as_str()), ("👍", "👎 ✓"));
        assert!(shows_a_vote(Some(&markup)));
        assert!(!shows_a_vote(Some(&vote_buttons(
            "l".into(),
            "d".into(),
            None
        ))));
        assert!(!shows_a_vote(None));
    }
}
