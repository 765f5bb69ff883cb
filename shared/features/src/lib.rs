//! A post's content as hashed features, so that a post can be scored the moment it is scraped,
//! before anyone has voted on it.
//!
//! One function, [`PostFeatures::of`], turns what the scraper stored (text, links, media, where it
//! was forwarded from) into a short list of (hash, weight) pairs. The trainer and the ranker's
//! scorer both call it, and map each hash to a row of the model's content table by the same
//! modulo ([`bucket`]), so a post is embedded identically in training and in serving. A change
//! to what is computed here must change [`FEATURES_VERSION`]: a model records the version it was
//! trained with and a scorer refuses a model of another.
//!
//! Views count relative to the channel's usual reach (the median of the page the post was read
//! from): a post read more than its channel's others is one its readers passed on, the one sign of
//! what everyone thinks of it that a page shows. The newest posts of a page are still gathering
//! views, so they read low until a later scrape updates them (the scraper stores every post of the
//! pages it reads again); the trainer and the ranker both read the stored figures, so they see the
//! same value. Age itself is left out: it changes by the minute, so a model would be trained on
//! other values than the ranker scores with.

use oleg_messages::{MediaKind, ScrapedPost};

/// The version of the feature definition below.
pub const FEATURES_VERSION: &str = "2";

/// At most this many features per post: the structural ones and then the text's, in order.
pub const MAX_FEATURES: usize = 48;

/// Words of the text that become features (the first distinct ones).
const MAX_WORDS: usize = 20;
/// Word prefixes (character n-grams at the start of longer words) that become features: they
/// join the inflected forms of a word (Russian, Ukrainian and German posts are common).
const MAX_PREFIXES: usize = 12;
const PREFIX_CHARS: usize = 5;
/// Link domains that become features.
const MAX_DOMAINS: usize = 4;
/// Relative views beyond this many e-folds either way read as this many: a post read a hundred
/// times its channel's usual is not told apart from one read twenty times.
const MAX_RELATIVE_VIEWS: f32 = 3.0;
/// The feature whose weight is a post's relative views.
const VIEWS_FEATURE: &str = "views:relative";
/// Text longer than this is more than a paragraph (a length class, and a broad form).
const PARAGRAPH_CHARS: usize = 280;
/// How many flags [`PostFeatures::broad_form`] has.
pub const BROAD_FORMS: usize = 4;

/// What a post says about itself, as stored by the scraper.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostContent {
    pub text: String,
    pub links: Vec<String>,
    pub media: Vec<MediaKind>,
    pub forwarded_from: Option<String>,
    /// Its view counter, and the median counter of the page it was read from.
    pub views: Option<u64>,
    pub page_median_views: Option<u64>,
}

impl PostContent {
    /// ln((1 + views) / (1 + the page's median)), capped at ±[`MAX_RELATIVE_VIEWS`]; none
    /// without both counters.
    pub fn relative_views(&self) -> Option<f32> {
        let (views, median) = (self.views?, self.page_median_views?);
        let ratio = (1.0 + views as f64) / (1.0 + median as f64);
        Some((ratio.ln() as f32).clamp(-MAX_RELATIVE_VIEWS, MAX_RELATIVE_VIEWS))
    }
}

impl From<&ScrapedPost> for PostContent {
    fn from(post: &ScrapedPost) -> Self {
        Self {
            text: post.text.clone(),
            links: post.links.clone(),
            media: post.media.iter().map(|m| m.kind).collect(),
            forwarded_from: post.forwarded_from.clone(),
            views: post.views,
            page_median_views: post.page_median_views,
        }
    }
}

/// A post's features: (hash, weight) pairs, at most [`MAX_FEATURES`]: the structural ones, then
/// its relative views (if any), then its text's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostFeatures {
    pairs: Vec<(u32, f32)>,
    /// Where the structural pairs end.
    structure_end: usize,
    /// Where the text's pairs begin (after the views' pair, where there is one).
    text_start: usize,
    broad_form: [bool; BROAD_FORMS],
}

impl PostFeatures {
    /// Structural features (media kinds, text length, links and their domains, forwarding) weigh
    /// 1 each; relative views weigh their value (one direction of the content vector, scaled);
    /// the text's words and word prefixes share a weight of norm 1, so that a long text does not
    /// outweigh what kind of post it is.
    pub fn of(content: &PostContent) -> Self {
        let mut structural: Vec<String> = Vec::new();
        if content.media.is_empty() {
            structural.push("media:none".into());
        }
        let mut kinds: Vec<&str> = content.media.iter().map(|k| media_name(*k)).collect();
        kinds.sort_unstable();
        kinds.dedup();
        structural.extend(kinds.iter().map(|k| format!("media:{k}")));
        let chars = content.text.chars().count();
        structural.push(format!("length:{}", length_class(chars)));
        structural.push(format!("links:{}", content.links.len().min(3)));
        let mut domains: Vec<String> = content.links.iter().filter_map(|l| domain(l)).collect();
        domains.sort_unstable();
        domains.dedup();
        structural.extend(
            domains
                .iter()
                .take(MAX_DOMAINS)
                .map(|d| format!("domain:{d}")),
        );
        let forwarded = match content.forwarded_from.as_deref().map(str::trim) {
            Some(source) if !source.is_empty() => {
                structural.push("forwarded".into());
                structural.push(format!("forwarded_from:{}", source.to_lowercase()));
                true
            }
            _ => {
                structural.push("original".into());
                false
            }
        };
        let (words, prefixes) = words_and_prefixes(&content.text);
        let textual: Vec<String> = words
            .iter()
            .take(MAX_WORDS)
            .map(|w| format!("word:{w}"))
            .chain(
                prefixes
                    .iter()
                    .take(MAX_PREFIXES)
                    .map(|p| format!("prefix:{p}")),
            )
            .collect();
        let text_weight = if textual.is_empty() {
            0.0
        } else {
            1.0 / (textual.len() as f32).sqrt()
        };
        let views = content
            .relative_views()
            .filter(|v| *v != 0.0)
            .map(|v| (hash(VIEWS_FEATURE), v));
        let pairs: Vec<(u32, f32)> = structural
            .iter()
            .map(|f| (hash(f), 1.0))
            .chain(views)
            .chain(textual.iter().map(|f| (hash(f), text_weight)))
            .take(MAX_FEATURES)
            .collect();
        let structure_end = structural.len().min(pairs.len());
        let text_start = (structure_end + usize::from(views.is_some())).min(pairs.len());
        Self {
            pairs,
            structure_end,
            text_start,
            broad_form: [
                !content.media.is_empty(),
                chars > PARAGRAPH_CHARS,
                !content.links.is_empty(),
                forwarded,
            ],
        }
    }

    pub fn pairs(&self) -> &[(u32, f32)] {
        &self.pairs
    }

    /// What form the post takes: media, length, links and their domains, forwarding.
    pub fn structure_pairs(&self) -> &[(u32, f32)] {
        &self.pairs[..self.structure_end]
    }

    /// Its form in the broadest terms, as flags: any media, text past a paragraph, any link,
    /// forwarded. Not among [`Self::pairs`] (the model's features): a reader who likes photos
    /// tends to like videos too, which the fine classes above keep apart, so the ranker can
    /// carry a person's taste across them.
    pub fn broad_form(&self) -> [bool; BROAD_FORMS] {
        self.broad_form
    }

    /// What its text says: its words and word prefixes.
    pub fn text_pairs(&self) -> &[(u32, f32)] {
        &self.pairs[self.text_start..]
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// The row of a model's content table that `hash` falls in, for a table of `buckets` rows.
pub fn bucket(hash: u32, buckets: u32) -> u32 {
    hash % buckets.max(1)
}

/// FNV-1a: fixed across platforms and releases (std's hasher is seeded per process).
fn hash(feature: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for byte in feature.bytes() {
        h ^= u32::from(byte);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn media_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Photo => "photo",
        MediaKind::Video => "video",
        MediaKind::RoundVideo => "round_video",
        MediaKind::Document => "document",
        MediaKind::Poll => "poll",
        MediaKind::LinkPreview => "link_preview",
    }
}

/// Text length in classes a reader would tell apart: none, a line, a paragraph, a few, an article.
fn length_class(chars: usize) -> &'static str {
    match chars {
        0 => "none",
        1..=80 => "line",
        81..=PARAGRAPH_CHARS => "paragraph",
        _ if chars <= 1000 => "long",
        _ => "article",
    }
}

/// The host of a link, lower-case and without `www.`.
fn domain(link: &str) -> Option<String> {
    let rest = link.split_once("://").map_or(link, |(_, rest)| rest);
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?.split(':').next()?.to_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host);
    (!host.is_empty() && host.contains('.')).then(|| host.to_owned())
}

/// Distinct lower-case words of two characters or more (in order of first use), and the distinct
/// prefixes of the words longer than a prefix.
fn words_and_prefixes(text: &str) -> (Vec<String>, Vec<String>) {
    let mut words: Vec<String> = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
    {
        let word = word.to_lowercase();
        if word.chars().count() > PREFIX_CHARS {
            let prefix: String = word.chars().take(PREFIX_CHARS).collect();
            if !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        if !words.contains(&word) {
            words.push(word);
        }
        if words.len() >= MAX_WORDS && prefixes.len() >= MAX_PREFIXES {
            break;
        }
    }
    (words, prefixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(text: &str) -> PostContent {
        PostContent {
            text: text.into(),
            ..PostContent::default()
        }
    }

    #[test]
    fn the_same_post_gives_the_same_features_and_different_posts_differ() {
        let post = PostContent {
            text: "Запуск ракеты перенесли на завтра".into(),
            links: vec!["https://www.example.org/a?b=1".into()],
            media: vec![MediaKind::Photo, MediaKind::Photo],
            forwarded_from: Some("SpaceNews".into()),
            ..PostContent::default()
        };
        assert_eq!(PostFeatures::of(&post), PostFeatures::of(&post.clone()));
        assert_ne!(PostFeatures::of(&post), PostFeatures::of(&content("hello")));
        // The hash is fixed: a change here is a change of FEATURES_VERSION.
        assert_eq!(
            hash("media:none"),
            0x6268_bdbd,
            "FNV-1a, as computed elsewhere"
        );
    }

    #[test]
    fn structure_weighs_one_each_and_the_text_shares_a_unit_norm() {
        let features = PostFeatures::of(&PostContent {
            text: "Rockets launch tomorrow, rockets land today".into(),
            links: vec![
                "https://example.org/x".into(),
                "http://user@Example.org:8080".into(),
            ],
            media: vec![MediaKind::Video],
            ..PostContent::default()
        });
        // media:video, length, links:2, one domain (the same host twice), original.
        let structure = features.structure_pairs();
        assert_eq!(structure.len(), 5);
        assert!(structure.iter().all(|(_, w)| *w == 1.0));
        let text_norm: f32 = features.text_pairs().iter().map(|(_, w)| w * w).sum();
        assert!((text_norm - 1.0).abs() < 1e-5, "{text_norm}");
        assert_eq!(
            structure.len() + features.text_pairs().len(),
            features.len()
        );
    }

    #[test]
    fn inflected_forms_share_a_prefix_and_long_texts_are_capped() {
        let (words, prefixes) = words_and_prefixes("ракета ракеты ракетой");
        assert_eq!(words.len(), 3);
        assert_eq!(prefixes, vec!["ракет".to_owned()]);
        let long: String = (0..500).map(|i| format!("word{i} ")).collect();
        assert!(PostFeatures::of(&content(&long)).len() <= MAX_FEATURES);
    }

    #[test]
    fn an_empty_post_still_has_its_structure() {
        let features = PostFeatures::of(&PostContent::default());
        assert_eq!(
            features.len(),
            4,
            "media:none, length:none, links:0, original"
        );
        assert!(features.pairs().iter().all(|(h, _)| bucket(*h, 100) < 100));
    }

    #[test]
    fn views_above_the_page_median_weigh_their_log_ratio_and_need_both_counters() {
        let read = |views, median| {
            PostFeatures::of(&PostContent {
                views,
                page_median_views: median,
                ..PostContent::default()
            })
        };
        let weight_of_views = |features: PostFeatures| {
            features
                .pairs()
                .iter()
                .find(|(h, _)| *h == hash(VIEWS_FEATURE))
                .map(|(_, w)| *w)
        };
        let above = weight_of_views(read(Some(2_999), Some(999))).unwrap();
        assert!((above - 3f32.ln()).abs() < 1e-6, "{above}");
        let below = weight_of_views(read(Some(99), Some(999))).unwrap();
        assert!((below + 10f32.ln()).abs() < 1e-5, "{below}");
        assert_eq!(
            weight_of_views(read(Some(10_000_000), Some(10))),
            Some(MAX_RELATIVE_VIEWS)
        );
        // What kind of post it is (its form and its text) leaves its views out, and nothing else.
        let read_more = read(Some(2_999), Some(999));
        let kinds: Vec<(u32, f32)> = [read_more.structure_pairs(), read_more.text_pairs()].concat();
        assert_eq!(kinds.len(), read_more.len() - 1);
        assert!(kinds.iter().all(|(h, _)| *h != hash(VIEWS_FEATURE)));
        // At the median, or without either counter, the post has no views feature.
        assert_eq!(weight_of_views(read(Some(999), Some(999))), None);
        assert_eq!(weight_of_views(read(Some(999), None)), None);
        assert_eq!(weight_of_views(read(None, Some(999))), None);
    }

    #[test]
    fn the_broad_form_joins_the_fine_classes_and_stays_out_of_the_model_features() {
        let photo = PostContent {
            media: vec![MediaKind::Photo],
            ..content("a line")
        };
        let video = PostContent {
            media: vec![MediaKind::Video],
            ..content("a line")
        };
        let (photo, video) = (PostFeatures::of(&photo), PostFeatures::of(&video));
        assert_ne!(photo.structure_pairs(), video.structure_pairs());
        assert_eq!(photo.broad_form(), [true, false, false, false]);
        assert_eq!(photo.broad_form(), video.broad_form());
        let article = PostFeatures::of(&PostContent {
            links: vec!["https://example.org".into()],
            forwarded_from: Some("SpaceNews".into()),
            ..content(&"x".repeat(PARAGRAPH_CHARS + 1))
        });
        assert_eq!(article.broad_form(), [false, true, true, true]);
        let paragraph = PostFeatures::of(&PostContent {
            forwarded_from: Some("  ".into()),
            ..content(&"x".repeat(PARAGRAPH_CHARS))
        });
        assert_eq!(paragraph.broad_form(), [false; BROAD_FORMS]);
        // The model's features are the same as without the flags: four for an empty post.
        assert_eq!(PostFeatures::of(&PostContent::default()).len(), 4);
    }

    #[test]
    fn domains_are_hosts_without_www_and_not_paths() {
        assert_eq!(
            domain("https://www.Example.org/x/y"),
            Some("example.org".into())
        );
        assert_eq!(domain("t.me/channel"), Some("t.me".into()));
        assert_eq!(domain("mailto:nobody"), None);
    }
}
