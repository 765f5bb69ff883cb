//! Every message type against its JSON Schema in `schemas/`: what the code emits validates, the
//! schemas' own examples decode, and invalid documents are refused with a reason that says why.

use chrono::{TimeZone, Utc};
use oleg_messages::*;
use serde_json::{json, Value};

fn schema(kind: MessageKind) -> Value {
    serde_json::from_str(kind.schema()).unwrap_or_else(|e| panic!("{}: {e}", kind.name()))
}

fn validator(kind: MessageKind) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema(kind))
        .unwrap_or_else(|e| panic!("{}: {e}", kind.name()))
}

fn assert_valid(kind: MessageKind, document: &Value) {
    let errors: Vec<String> = validator(kind)
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{} rejected {document}: {errors:?}",
        kind.name()
    );
}

fn schema_errors(kind: MessageKind, document: &Value) -> Vec<String> {
    validator(kind)
        .iter_errors(document)
        .map(|e| e.to_string())
        .collect()
}

fn post(channel: &str, id: i64) -> PostRef {
    PostRef {
        channel: ChannelName::parse(channel).unwrap(),
        post_id: PostId::new(id).unwrap(),
    }
}

fn at(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(secs, 123_000_000).unwrap()
}

/// One emitted value of every kind, built the way the workers build them.
fn emitted_examples() -> Vec<(MessageKind, Value)> {
    let user = UserId::new(190_233).unwrap();
    let vote = Vote::new(
        user,
        post("codecamp", 2371),
        Reaction::Dislike,
        at(1_764_000_000),
    );
    let mut started = UserStarted::new(user, at(1_764_000_000));
    started.language_code = Some("uk".into());
    let scraped = ScrapedPost {
        schema_version: SCHEMA_VERSION,
        channel: ChannelName::parse("topwar_official").unwrap(),
        post_id: PostId::new(70_996).unwrap(),
        published_at: at(1_677_593_000),
        text: "Переслано 🚀".into(),
        links: vec!["https://example.org/a".into()],
        views: Some(9000),
        page_median_views: Some(7400),
        media: vec![
            MediaItem {
                kind: MediaKind::Photo,
                url: Some("https://cdn4.telesco.pe/file/x.jpg".into()),
            },
            MediaItem {
                kind: MediaKind::Poll,
                url: None,
            },
        ],
        forwarded_from: Some("Военное обозрение".into()),
        reply_to: Some(PostId::new(70_990).unwrap()),
        scraped_at: at(1_677_594_000),
    };
    let ingested = VotesIngested {
        schema_version: SCHEMA_VERSION,
        new_votes: 10,
        changed_votes: 2,
        duplicate_votes: 1,
        ingested_through: Utc::now(),
    };
    let published = ModelPublished {
        schema_version: SCHEMA_VERSION,
        version: ModelVersion::new(3).unwrap(),
        variant: "channel_mlp".into(),
        trained_on_votes: 1000,
        holdout: HoldoutMetrics {
            auc: 0.64,
            mse: 0.152,
            log_loss: 0.47,
            votes: 200,
        },
        published_at: Utc::now(),
    };
    let mut request = RecommendRequest::new(user, 2);
    request.exclude.push(post("excelhackru", 1354));
    let reply = RecommendReply::Ok {
        schema_version: SCHEMA_VERSION,
        user_id: user,
        posts: vec![RecommendedPost {
            channel: ChannelName::parse("codecamp").unwrap(),
            post_id: PostId::new(2374).unwrap(),
            score: 0.87,
            explored: true,
            text: Some("Опа, Hugging Face <b>совместно</b> с ServiceNow…".into()),
        }],
        model_version: None,
        cold_start: true,
        exploration_noise: 0.05,
        exploration: ExplorationPolicy::Thompson,
    };
    let failed = RecommendReply::error(RecommendErrorCode::Malformed, "missing user_id");
    let dead_text = DeadLetter::new(
        DeadLetterReason::UnknownPost,
        "no such post",
        "oleg.ingest",
        "vote.cast",
        1,
        b"{}",
    );
    let dead_binary = DeadLetter::new(
        DeadLetterReason::Malformed,
        "not JSON",
        "oleg.ingest",
        "vote.cast",
        3,
        &[0xff, 0x00, 0x9f],
    )
    .replayed(2);

    let with_policy = |policy| {
        let mut reply = reply.clone();
        if let RecommendReply::Ok { exploration, .. } = &mut reply {
            *exploration = policy;
        }
        reply
    };
    fn value<M: Message>(m: &M) -> (MessageKind, Value) {
        (M::KIND, serde_json::from_slice(&encode(m)).unwrap())
    }
    vec![
        value(&vote),
        value(&started),
        value(&UserStarted::new(user, at(0))),
        value(&scraped),
        value(&ingested),
        value(&published),
        value(&request),
        value(&reply),
        // Every other exploration policy a reply can name.
        value(&with_policy(ExplorationPolicy::PosteriorMean)),
        value(&with_policy(ExplorationPolicy::Noise)),
        value(&failed),
        value(&dead_text),
        value(&dead_binary),
        value(&AddChannel {
            schema_version: SCHEMA_VERSION,
            channel: ChannelName::parse("air_alert_ua").unwrap(),
            requested_by: Some(user),
            requested_at: Utc::now(),
        }),
    ]
}

#[test]
fn schemas_are_valid_draft_2020_12_and_cover_every_kind() {
    for kind in MessageKind::ALL {
        let schema = schema(kind);
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema",
            "{}",
            kind.name()
        );
        jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        // The file in schemas/ is what the crate embeds.
        let on_disk = std::fs::read_to_string(format!(
            "{}/../../schemas/{}.schema.json",
            env!("CARGO_MANIFEST_DIR"),
            kind.name()
        ))
        .unwrap();
        assert_eq!(on_disk, kind.schema());
    }
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))
        .unwrap()
        .count();
    assert_eq!(
        files,
        MessageKind::ALL.len(),
        "a schema in schemas/ has no MessageKind"
    );
}

#[test]
fn everything_the_code_emits_validates_against_its_schema() {
    let examples = emitted_examples();
    for kind in MessageKind::ALL {
        assert!(
            examples.iter().any(|(k, _)| *k == kind),
            "no emitted example of {}",
            kind.name()
        );
    }
    for (kind, document) in &examples {
        assert_valid(*kind, document);
    }
}

fn decode_as(kind: MessageKind, body: &[u8]) -> Result<Value, Rejection> {
    fn via<M: Message>(body: &[u8]) -> Result<Value, Rejection> {
        decode::<M>(body, 1 << 20).map(|m| serde_json::from_slice(&encode(&m)).unwrap())
    }
    match kind {
        MessageKind::ScrapedPost => via::<ScrapedPost>(body),
        MessageKind::Vote => via::<Vote>(body),
        MessageKind::UserStarted => via::<UserStarted>(body),
        MessageKind::VotesIngested => via::<VotesIngested>(body),
        MessageKind::ModelPublished => via::<ModelPublished>(body),
        MessageKind::RecommendRequest => via::<RecommendRequest>(body),
        MessageKind::RecommendReply => via::<RecommendReply>(body),
        MessageKind::DeadLetter => via::<DeadLetter>(body),
        MessageKind::AddChannel => via::<AddChannel>(body),
    }
}

#[test]
fn schema_examples_validate_and_decode_into_the_rust_types() {
    for kind in MessageKind::ALL {
        let examples = schema(kind)["examples"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!examples.is_empty(), "{} has no examples", kind.name());
        for example in examples {
            assert_valid(kind, &example);
            let reencoded = decode_as(kind, example.to_string().as_bytes()).unwrap_or_else(|e| {
                panic!("{} example {example} does not decode: {e}", kind.name())
            });
            // What we write back out of a decoded example is valid too.
            assert_valid(kind, &reencoded);
        }
    }
}

#[test]
fn invalid_documents_are_rejected_by_schema_and_decoder_with_a_reason() {
    let good = json!({"schema_version": 1, "user_id": 5, "channel": "codecamp", "post_id": 2371,
                      "reaction": "like", "voted_at": "2026-11-27T10:20:31Z"});
    let with = |key: &str, value: Value| {
        let mut doc = good.clone();
        doc[key] = value;
        doc
    };
    let without = |key: &str| {
        let mut doc = good.clone();
        doc.as_object_mut().unwrap().remove(key);
        doc
    };
    // (document, what the schema error says, decoder's reason, what the decoder's detail says)
    let cases = [
        (
            with("reaction", json!("love")),
            "love",
            DeadLetterReason::UnknownReaction,
            "love",
        ),
        (
            without("user_id"),
            "user_id",
            DeadLetterReason::Malformed,
            "user_id",
        ),
        (
            with("user_id", json!(-4)),
            "minimum",
            DeadLetterReason::Malformed,
            "positive",
        ),
        (
            with("channel", json!("no")),
            "does not match",
            DeadLetterReason::Malformed,
            "5-32",
        ),
        (
            with("voted_at", json!("yesterday")),
            "date-time",
            DeadLetterReason::Malformed,
            "voted_at",
        ),
        (
            with("schema_version", json!(2)),
            "1",
            DeadLetterReason::UnsupportedSchemaVersion,
            "schema_version 2",
        ),
        (
            without("schema_version"),
            "schema_version",
            DeadLetterReason::Malformed,
            "schema_version",
        ),
        (
            with("extra", json!(true)),
            "extra",
            DeadLetterReason::Malformed,
            "extra",
        ),
    ];
    for (document, schema_says, reason, decoder_says) in cases {
        let errors = schema_errors(MessageKind::Vote, &document);
        assert!(
            errors.iter().any(|e| e.contains(schema_says)),
            "schema should refuse {document} mentioning {schema_says:?}, said {errors:?}"
        );
        let rejection = decode::<Vote>(document.to_string().as_bytes(), 16 * 1024).unwrap_err();
        assert_eq!(rejection.reason, reason, "{document}: {rejection}");
        assert!(
            rejection.detail.contains(decoder_says),
            "{document}: {rejection}"
        );
    }
}

#[test]
fn decoder_refuses_non_json_and_oversized_bodies() {
    let not_json = decode::<Vote>(b"\xff\xfe garbage", 1024).unwrap_err();
    assert_eq!(not_json.reason, DeadLetterReason::Malformed);
    assert!(not_json.detail.starts_with("not JSON"), "{not_json}");

    let array = decode::<Vote>(b"[1,2]", 1024).unwrap_err();
    assert!(array.detail.contains("object"), "{array}");

    let big = vec![b' '; 17 * 1024];
    let too_large = decode::<Vote>(&big, 16 * 1024).unwrap_err();
    assert_eq!(too_large.reason, DeadLetterReason::TooLarge);
    assert!(too_large.detail.contains("16384"), "{too_large}");
}

#[test]
fn reply_schema_refuses_mixed_shapes() {
    let bad =
        json!({"status": "ok", "schema_version": 1, "error": {"code": "internal", "message": "x"}});
    assert!(!schema_errors(MessageKind::RecommendReply, &bad).is_empty());
    assert!(decode::<RecommendReply>(bad.to_string().as_bytes(), 1024).is_err());
}

#[test]
fn dead_letter_payload_round_trips_binary_bodies() {
    let body = [0u8, 159, 146, 150, 255];
    let letter = DeadLetter::new(DeadLetterReason::Malformed, "x", "q", "k", 1, &body);
    assert!(matches!(letter.payload, Payload::Base64(_)));
    assert_eq!(letter.payload.to_bytes().unwrap(), body);
}
