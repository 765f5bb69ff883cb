//! Parsing a channel's web preview page (`t.me/s/<channel>`) or its info page (`t.me/<channel>`).
//!
//! Markup changes between captures (see the fixtures' SOURCES.md), so elements are found by class
//! token, never by whole attribute; what cannot be read is skipped and reported as a warning, and
//! one unreadable post never stops the page.

use chrono::{DateTime, Utc};
use oleg_messages::{MediaItem, MediaKind};
use scraper::{ElementRef, Html, Node, Selector};
use serde::Serialize;
use std::sync::LazyLock;

/// The channel's header: from a listing's info block or an info page.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChannelHeader {
    pub title: Option<String>,
    pub username: Option<String>,
    pub subscribers: Option<u64>,
    pub description: Option<String>,
}

/// One post as read from the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParsedPost {
    pub channel: String,
    pub id: i64,
    pub date: DateTime<Utc>,
    pub text: String,
    pub links: Vec<String>,
    pub views: Option<u64>,
    pub media: Vec<MediaItem>,
    pub forwarded_from: Option<String>,
    pub reply_to: Option<i64>,
}

/// Something on the page that was not understood.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParseWarning {
    /// `channel/id` when known.
    pub post: Option<String>,
    pub problem: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ParsedPage {
    pub header: ChannelHeader,
    pub posts: Vec<ParsedPost>,
    /// Service messages ("Channel created", pinned …), skipped.
    pub service_messages: usize,
    pub warnings: Vec<ParseWarning>,
    /// The id the "load more" link asks for (`?before=`), when older posts exist.
    pub before: Option<i64>,
}

fn selector(css: &str) -> Selector {
    Selector::parse(css).expect("a valid selector")
}

macro_rules! selectors {
    ($($name:ident = $css:literal;)*) => {
        $(static $name: LazyLock<Selector> = LazyLock::new(|| selector($css));)*
    };
}

selectors! {
    MESSAGE = ".tgme_widget_message";
    DATE_TIME = ".tgme_widget_message_date time";
    TEXT = ".tgme_widget_message_text";
    VIEWS = ".tgme_widget_message_views";
    FORWARDED = ".tgme_widget_message_forwarded_from_name";
    REPLY = "a.tgme_widget_message_reply";
    PHOTO = "a.tgme_widget_message_photo_wrap";
    VIDEO = ".tgme_widget_message_video_player";
    ROUND_VIDEO = ".tgme_widget_message_roundvideo_player";
    DOCUMENT = "a.tgme_widget_message_document_wrap, .tgme_widget_message_document_wrap";
    POLL = ".tgme_widget_message_poll";
    LINK_PREVIEW = "a.tgme_widget_message_link_preview";
    VIDEO_SOURCE = "video";
    ANCHOR = "a[href]";
    INFO_TITLE = ".tgme_channel_info_header_title";
    INFO_USERNAME = ".tgme_channel_info_header_username";
    INFO_DESCRIPTION = ".tgme_channel_info_description";
    INFO_COUNTER = ".tgme_channel_info_counter";
    COUNTER_VALUE = ".counter_value";
    COUNTER_TYPE = ".counter_type";
    PAGE_TITLE = ".tgme_page_title";
    PAGE_EXTRA = ".tgme_page_extra";
    PAGE_DESCRIPTION = ".tgme_page_description";
    MORE = "a.tme_messages_more[data-before]";
}

/// Collapses runs of whitespace (the markup of some captures is re-indented) and trims.
fn clean(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn text_of(element: ElementRef<'_>) -> String {
    clean(&element.text().collect::<String>())
}

fn has_class(element: ElementRef<'_>, class: &str) -> bool {
    element.value().classes().any(|c| c == class)
}

/// Whether `element` sits inside an element with `class`, below `stop`.
fn inside(element: ElementRef<'_>, class: &str, stop: ElementRef<'_>) -> bool {
    element
        .ancestors()
        .take_while(|n| n.id() != stop.id())
        .filter_map(ElementRef::wrap)
        .any(|a| has_class(a, class))
}

/// "9.0K" → 9000, "1.2M" → 1 200 000, "82 932" → 82932, "532" → 532.
pub fn parse_count(raw: &str) -> Option<u64> {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let compact = compact
        .split(|c: char| c.is_alphabetic() && !"KkMmBb".contains(c))
        .next()?
        .to_owned();
    let (number, factor) = match compact.chars().last()? {
        'K' | 'k' => (&compact[..compact.len() - 1], 1e3),
        'M' | 'm' => (&compact[..compact.len() - 1], 1e6),
        'B' | 'b' => (&compact[..compact.len() - 1], 1e9),
        _ => (compact.as_str(), 1.0),
    };
    let value: f64 = number.replace(',', ".").parse().ok()?;
    (value >= 0.0).then(|| (value * factor).round() as u64)
}

/// Text with its line breaks: as in a browser, whitespace inside text collapses to one space and
/// only `<br>` breaks a line.
fn message_text(element: ElementRef<'_>) -> String {
    let mut out = String::new();
    for node in element.descendants() {
        match node.value() {
            Node::Text(text) => {
                let mut pieces = text.split(char::is_whitespace);
                if let Some(first) = pieces.next() {
                    out.push_str(first);
                }
                for piece in pieces {
                    if !out.ends_with([' ', '\n']) {
                        out.push(' ');
                    }
                    out.push_str(piece);
                }
            }
            Node::Element(e) if e.name() == "br" => out.push('\n'),
            _ => {}
        }
    }
    out.lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// `url('…')` out of a `style` attribute.
fn background_url(element: ElementRef<'_>) -> Option<String> {
    let style = element.value().attr("style")?;
    let start = style.find("url(")? + 4;
    let rest = &style[start..];
    let end = rest.find(')')?;
    Some(
        rest[..end]
            .trim_matches(|c| c == '\'' || c == '"')
            .to_owned(),
    )
}

fn parse_post(message: ElementRef<'_>) -> Result<ParsedPost, String> {
    let data_post = message
        .value()
        .attr("data-post")
        .ok_or("no data-post attribute")?;
    let (channel, id) = data_post
        .rsplit_once('/')
        .ok_or_else(|| format!("data-post {data_post:?} has no id"))?;
    if channel.is_empty() {
        return Err(format!("data-post {data_post:?} has no channel"));
    }
    let id: i64 = id
        .parse()
        .map_err(|_| format!("data-post {data_post:?} has no numeric id"))?;
    let datetime = message
        .select(&DATE_TIME)
        .next()
        .and_then(|t| t.value().attr("datetime"))
        .ok_or("no date")?;
    let date = DateTime::parse_from_rfc3339(datetime)
        .map_err(|e| format!("date {datetime:?}: {e}"))?
        .with_timezone(&Utc);
    // The post's own text, not the quoted text of a reply or a link preview's description.
    let text_element = message.select(&TEXT).find(|t| {
        !inside(*t, "tgme_widget_message_reply", message)
            && !inside(*t, "tgme_widget_message_link_preview", message)
    });
    let (text, links) = match text_element {
        Some(t) => (
            message_text(t),
            t.select(&ANCHOR)
                .filter_map(|a| a.value().attr("href").map(str::to_owned))
                .collect(),
        ),
        None => (String::new(), Vec::new()),
    };
    let views = message
        .select(&VIEWS)
        .next()
        .and_then(|v| parse_count(&text_of(v)));
    let mut media = Vec::new();
    for photo in message.select(&PHOTO) {
        media.push(MediaItem {
            kind: MediaKind::Photo,
            url: background_url(photo),
        });
    }
    for video in message.select(&VIDEO) {
        let url = video
            .select(&VIDEO_SOURCE)
            .next()
            .and_then(|v| v.value().attr("src").map(str::to_owned))
            .or_else(|| video.value().attr("href").map(str::to_owned));
        media.push(MediaItem {
            kind: MediaKind::Video,
            url,
        });
    }
    for round in message.select(&ROUND_VIDEO) {
        let url = round
            .select(&VIDEO_SOURCE)
            .next()
            .and_then(|v| v.value().attr("src").map(str::to_owned));
        media.push(MediaItem {
            kind: MediaKind::RoundVideo,
            url,
        });
    }
    for document in message
        .select(&DOCUMENT)
        .filter(|d| !inside(*d, "tgme_widget_message_document_wrap", message))
    {
        media.push(MediaItem {
            kind: MediaKind::Document,
            url: document.value().attr("href").map(str::to_owned),
        });
    }
    for _poll in message.select(&POLL) {
        media.push(MediaItem {
            kind: MediaKind::Poll,
            url: None,
        });
    }
    for preview in message.select(&LINK_PREVIEW) {
        media.push(MediaItem {
            kind: MediaKind::LinkPreview,
            url: preview.value().attr("href").map(str::to_owned),
        });
    }
    let forwarded_from = message
        .select(&FORWARDED)
        .next()
        .map(text_of)
        .filter(|s| !s.is_empty());
    let reply_to = message
        .select(&REPLY)
        .next()
        .and_then(|r| r.value().attr("href"))
        .and_then(|href| {
            href.trim_end_matches('/')
                .rsplit('/')
                .next()?
                .split('?')
                .next()?
                .parse()
                .ok()
        });
    Ok(ParsedPost {
        channel: channel.to_owned(),
        id,
        date,
        text,
        links,
        views,
        media,
        forwarded_from,
        reply_to,
    })
}

fn parse_header(page: &Html) -> ChannelHeader {
    let first = |s: &Selector| page.select(s).next().map(text_of).filter(|t| !t.is_empty());
    let mut header = ChannelHeader {
        title: first(&INFO_TITLE).or_else(|| first(&PAGE_TITLE)),
        username: first(&INFO_USERNAME).map(|u| u.trim_start_matches('@').to_owned()),
        description: page
            .select(&INFO_DESCRIPTION)
            .next()
            .or_else(|| page.select(&PAGE_DESCRIPTION).next())
            .map(message_text)
            .filter(|t| !t.is_empty()),
        subscribers: None,
    };
    header.subscribers = page
        .select(&INFO_COUNTER)
        .find(|c| {
            c.select(&COUNTER_TYPE)
                .next()
                .map(text_of)
                .is_some_and(|t| t.starts_with("subscriber"))
        })
        .and_then(|c| c.select(&COUNTER_VALUE).next())
        .and_then(|v| parse_count(&text_of(v)))
        .or_else(|| {
            // An info page: "82 932 subscribers".
            let extra = first(&PAGE_EXTRA)?;
            let number: String = extra.split(|c: char| c.is_alphabetic()).next()?.to_owned();
            parse_count(&number)
        });
    header
}

/// Parses a whole page; never fails: what cannot be read becomes a warning.
pub fn parse_page(html: &str) -> ParsedPage {
    let page = Html::parse_document(html);
    let mut parsed = ParsedPage {
        header: parse_header(&page),
        ..ParsedPage::default()
    };
    for message in page.select(&MESSAGE) {
        if has_class(message, "service_message") {
            parsed.service_messages += 1;
            continue;
        }
        match parse_post(message) {
            Ok(post) => parsed.posts.push(post),
            Err(problem) => parsed.warnings.push(ParseWarning {
                post: message.value().attr("data-post").map(str::to_owned),
                problem,
            }),
        }
    }
    parsed.before = page
        .select(&MORE)
        .next()
        .and_then(|a| a.value().attr("data-before"))
        .and_then(|b| b.parse().ok());
    parsed
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn counts() {
        assert_eq!(parse_count("9.0K"), Some(9_000));
        assert_eq!(parse_count("60.8K"), Some(60_800));
        assert_eq!(parse_count("1.2M"), Some(1_200_000));
        assert_eq!(parse_count("82 932"), Some(82_932));
        assert_eq!(parse_count("532"), Some(532));
        assert_eq!(parse_count(""), None);
        assert_eq!(parse_count("many"), None);
    }
}
