//! The parser on every real page in ../shared/fixtures/telegram (see its SOURCES.md), with values
//! read off the pages, and on broken input that must never panic.

use oleg_messages::MediaKind::{self, *};
use oleg_scraper::parse::{parse_page, ParsedPage, ParsedPost};
use proptest::prelude::*;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../../shared/fixtures/telegram/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn page(name: &str) -> ParsedPage {
    let page = parse_page(&fixture(name));
    assert!(page.warnings.is_empty(), "{name}: {:?}", page.warnings);
    page
}

fn post(page: &ParsedPage, id: i64) -> &ParsedPost {
    page.posts
        .iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("post {id} missing"))
}

fn kinds(post: &ParsedPost) -> Vec<MediaKind> {
    post.media.iter().map(|m| m.kind).collect()
}

fn ids(page: &ParsedPage) -> Vec<i64> {
    page.posts.iter().map(|p| p.id).collect()
}

#[test]
fn codecamp_listing() {
    let page = page("codecamp.html");
    assert_eq!(ids(&page), (2357..=2376).collect::<Vec<_>>());
    assert!(page.posts.iter().all(|p| p.channel == "campcode"));
    assert_eq!(page.header.title.as_deref(), Some("CodeCamp"));
    assert_eq!(page.header.subscribers, Some(82_900), "82.9K");
    assert_eq!(page.before, Some(2357));
    let first = post(&page, 2357);
    assert_eq!(first.date.to_rfc3339(), "2023-05-01T07:45:19+00:00");
    assert_eq!(first.views, Some(60_800), "60.8K");
    assert!(
        first.text.starts_with("Пора познакомиться с Lyrebird"),
        "{}",
        first.text
    );
    assert_eq!(
        first.links,
        vec!["https://github.com/lyrebird-voice-changer/lyrebird"]
    );
    assert_eq!(kinds(first), vec![Photo]);
    assert!(first.media[0]
        .url
        .as_deref()
        .unwrap()
        .starts_with("https://cdn4.telegram-cdn.org/file/"));
    for id in [2360, 2366, 2368, 2370, 2376] {
        assert_eq!(kinds(post(&page, id)), vec![Video], "{id}");
    }
    assert_eq!(
        post(&page, 2370).forwarded_from.as_deref(),
        Some("Киллер-фича")
    );
    assert!(post(&page, 2371)
        .text
        .starts_with("На Хабре вышла интересная статья"));
    for id in [2371, 2374] {
        assert_eq!(kinds(post(&page, id)), vec![LinkPreview], "{id}");
    }
    assert!(post(&page, 2374).media[0]
        .url
        .as_deref()
        .unwrap()
        .contains("huggingface.co"));
    for id in [2364, 2372] {
        assert_eq!(kinds(post(&page, id)), vec![Document], "{id}");
    }
    assert_eq!(post(&page, 2376).views, Some(3_500));
}

#[test]
fn codecamp_info_page() {
    let page = page("codecamp-info.html");
    assert!(page.posts.is_empty());
    assert_eq!(page.header.title.as_deref(), Some("CodeCamp"));
    assert_eq!(
        page.header.subscribers,
        Some(82_932),
        "\"82 932 subscribers\""
    );
    assert!(page
        .header
        .description
        .as_deref()
        .unwrap()
        .starts_with("Лагерь IT-специалистов!\n"));
}

#[test]
fn excelhackru_albums_documents_polls_emoji() {
    let page = page("excelhackru.html");
    assert_eq!(page.posts.len(), 18);
    assert_eq!((ids(&page)[0], *ids(&page).last().unwrap()), (1321, 1363));
    assert_eq!(
        kinds(post(&page, 1321)),
        vec![Photo; 4],
        "album of 4 photos"
    );
    assert_eq!(kinds(post(&page, 1337)), vec![Photo]);
    assert!(
        post(&page, 1337)
            .text
            .starts_with("🗺 Планируете путешествие"),
        "emoji kept"
    );
    for id in [1349, 1350, 1351] {
        assert_eq!(kinds(post(&page, id)), vec![Document], "{id}");
        assert_eq!(post(&page, id).text, "", "{id} has no text");
    }
    for id in [1354, 1355] {
        assert_eq!(kinds(post(&page, id)), vec![Poll], "{id}");
    }
    assert_eq!(post(&page, 1321).views, Some(25_600));
    assert_eq!(page.header.subscribers, Some(53_000));
}

#[test]
fn infoscape_service_message_reply_preview_document() {
    let page = page("infoscape_test.html");
    assert_eq!(page.service_messages, 1, "\"Channel created\" is skipped");
    assert_eq!(ids(&page), vec![2, 3, 4, 5, 7]);
    assert_eq!(post(&page, 2).text, "простое сообщение");
    assert_eq!(post(&page, 2).views, Some(2));
    assert_eq!(kinds(post(&page, 3)), vec![Photo]);
    assert_eq!(kinds(post(&page, 4)), vec![LinkPreview]);
    assert_eq!(post(&page, 4).links, vec!["https://yandex.ru/"]);
    assert_eq!(kinds(post(&page, 5)), vec![Document]);
    assert_eq!(post(&page, 7).reply_to, Some(2));
    assert_eq!(
        post(&page, 7).text,
        "ответ на сообщение",
        "the quoted text is not the post's"
    );
    assert_eq!(page.before, None, "a tiny channel has no older page");
}

#[test]
fn air_alert_ua_ukrainian_text_with_emoji() {
    let page = page("air_alert_ua.html");
    assert_eq!(ids(&page), (51932..=51951).collect::<Vec<_>>());
    let first = post(&page, 51932);
    assert!(
        first
            .text
            .starts_with("🟢 07:13 Відбій тривоги в Донецька область."),
        "{}",
        first.text
    );
    assert_eq!(first.views, Some(53_700));
    assert!(
        post(&page, 51949)
            .text
            .contains("Загроза артобстрілу!\nЗараз"),
        "line breaks kept"
    );
    assert!(page.posts.iter().all(|p| p.media.is_empty()));
}

#[test]
fn topwar_reindented_markup_albums_and_forwards() {
    let page = page("topwar_official.html");
    assert_eq!(page.posts.len(), 12);
    assert_eq!(page.header.title.as_deref(), Some("Военное обозрение"));
    assert_eq!(page.header.subscribers, Some(109_000));
    // The capture was re-indented: whitespace inside the text is not a line break.
    assert!(post(&page, 70990)
        .text
        .starts_with("Власти Петербурга подтвердили, что аэропорт Пулково"));
    assert_eq!(
        kinds(post(&page, 70992)),
        vec![Photo, Photo, Video],
        "album of photos and a video"
    );
    assert_eq!(kinds(post(&page, 71000)), vec![Photo; 6]);
    let forwarded: Vec<i64> = page
        .posts
        .iter()
        .filter(|p| p.forwarded_from.is_some())
        .map(|p| p.id)
        .collect();
    assert_eq!(forwarded, vec![70996, 70998, 71006, 71007, 71008]);
    assert_eq!(
        post(&page, 70996).forwarded_from.as_deref(),
        Some("Военкор Ярем")
    );
    assert_eq!(kinds(post(&page, 70996)), vec![LinkPreview]);
}

#[test]
fn damaged_pages_lose_only_the_damaged_posts() {
    let html = fixture("codecamp.html")
        .replacen("data-post=\"campcode/2358\"", "data-post=\"campcode/\"", 1)
        .replacen("datetime=\"2023-05-02T16:01:12+00:00\"", "datetime=\"\"", 1);
    let page = parse_page(&html);
    assert_eq!(page.posts.len(), 18);
    assert_eq!(page.warnings.len(), 2, "{:?}", page.warnings);
    let truncated = parse_page(&fixture("excelhackru.html")[..60_000]);
    assert!(!truncated.posts.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_page(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn any_truncation_or_splice_never_panics(cut in 0usize..100_000, splice in 0usize..100_000, len in 0usize..400) {
        let html = fixture("topwar_official.html");
        let cut = html.floor_char_boundary(cut.min(html.len()));
        let _ = parse_page(&html[..cut]);
        let at = html.floor_char_boundary(splice.min(html.len()));
        let end = html.floor_char_boundary((at + len).min(html.len()));
        let _ = parse_page(&format!("{}{}", &html[..at], &html[end..]));
    }
}

#[test]
fn a_deeply_nested_document_never_panics() {
    let depth = 3_000;
    let html = format!(
        "{}<div class=\"tgme_widget_message\" data-post=\"a/1\">x</div>{}",
        "<div>".repeat(depth),
        "</div>".repeat(depth)
    );
    let page = parse_page(&html);
    assert!(page.posts.is_empty());
    assert_eq!(page.warnings.len(), 1, "no date: counted, not a crash");
}
