//! The ranker's Rust scores equal the trainer's forward pass (tch) within 1e-5, on random models
//! and inputs, for every variant; posts the model never saw score from their channel (and, in
//! the content network, from their content) exactly as the trainer would score them.

use oleg_features::{PostContent, PostFeatures};
use oleg_messages::MediaKind;
use oleg_model::{write_network, Batch, LossKind, ModelConfig, Network, Sizes, Variant};
use oleg_scorer::{Candidate, ScoringModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

const USERS: i64 = 40;
const POSTS: i64 = 300;
const CHANNELS: i64 = 7;

/// The content of post row `row`: words, media, links and forwarding that vary with the row.
fn content(row: i64) -> PostFeatures {
    const WORDS: [&str; 8] = [
        "rocket",
        "launch",
        "погода",
        "завтра",
        "markets",
        "fell",
        "concert",
        "tonight",
    ];
    let r = row as usize;
    PostFeatures::of(&PostContent {
        text: (0..r % 7)
            .map(|i| WORDS[(r * 3 + i) % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" "),
        links: (0..r % 3)
            .map(|i| format!("https://site{i}.example/{r}"))
            .collect(),
        media: [MediaKind::Photo, MediaKind::Video, MediaKind::Poll][..r % 4 % 3].to_vec(),
        forwarded_from: r.is_multiple_of(5).then(|| format!("source{}", r % 2)),
        // Read more and less than the page's median (and without counters): weights above and
        // below one.
        views: (!r.is_multiple_of(4)).then_some((r as u64 * 997) % 5_000),
        page_median_views: Some(1_500),
    })
}

fn files(network: &Network) -> (Vec<u8>, Vec<u8>) {
    let mut weights = Vec::new();
    write_network(network, &[], &mut weights).unwrap();
    let vocab = serde_json::json!({
        "users": (0..USERS).map(|u| 1000 + u).collect::<Vec<_>>(),
        "channels": (0..CHANNELS).map(|c| format!("channel_{c}")).collect::<Vec<_>>(),
        "posts": (0..POSTS).map(|p| (p % CHANNELS, 5000 + p)).collect::<Vec<_>>(),
    });
    (weights, vocab.to_string().into_bytes())
}

fn random_network(config: &ModelConfig, seed: i64) -> Network {
    tch::manual_seed(seed);
    let mut network = Network::new(
        config,
        Sizes {
            users: USERS,
            posts: POSTS,
            channels: CHANNELS,
        },
        Device::Cpu,
    );
    // Trained-looking weights: perturb every parameter, biases included.
    let post_channels: Vec<i64> = (0..POSTS).map(|p| p % CHANNELS).collect();
    network
        .grow(
            Sizes {
                users: USERS,
                posts: POSTS,
                channels: CHANNELS,
            },
            &post_channels,
        )
        .unwrap();
    let contents: Vec<PostFeatures> = (0..POSTS).map(content).collect();
    network.add_post_contents(&contents);
    tch::no_grad(|| {
        for (_, t) in network.named_tensors() {
            let _ = t.shallow_clone().f_add_(&(t.randn_like() * 0.3)).unwrap();
        }
    });
    network
}

#[test]
fn rust_scores_match_the_tch_forward_pass() {
    let mut rng = StdRng::seed_from_u64(9);
    let configs = [
        ModelConfig::default(),
        ModelConfig {
            loss: LossKind::Bce,
            output_scale: 1.0,
            hidden: 33,
            user_dim: 17,
            post_dim: 9,
            channel_dim: 5,
            ..ModelConfig::default()
        },
        ModelConfig {
            variant: Variant::Dot,
            dot_dim: 12,
            ..ModelConfig::default()
        },
        ModelConfig {
            variant: Variant::ContentMlp,
            ..ModelConfig::default()
        },
        // Few buckets: features share rows, as they do in a large model.
        ModelConfig {
            variant: Variant::ContentMlp,
            content_buckets: 7,
            hidden: 19,
            post_dim: 6,
            ..ModelConfig::default()
        },
    ];
    let contents: Vec<PostFeatures> = (0..POSTS).map(content).collect();
    for (i, config) in configs.iter().enumerate() {
        for seed in 0..3 {
            let network = random_network(config, (i * 10 + seed) as i64);
            let (weights, vocab) = files(&network);
            let model = ScoringModel::load(&weights, &vocab).unwrap();
            for _ in 0..5 {
                let user = rng.random_range(0..USERS);
                let posts: Vec<i64> = (0..50).map(|_| rng.random_range(0..POSTS)).collect();
                let expected = network.predict(&Batch {
                    users: Tensor::full([50], user, (Kind::Int64, Device::Cpu)),
                    posts: Tensor::from_slice(&posts),
                    channels: Tensor::from_slice(
                        &posts.iter().map(|p| p % CHANNELS).collect::<Vec<_>>(),
                    ),
                    id_kept: None,
                });
                let mut expected_values = vec![0f32; 50];
                expected.copy_data(&mut expected_values, 50);
                let row = model.user_row(1000 + user).unwrap();
                let channel_names: Vec<String> = posts
                    .iter()
                    .map(|p| format!("channel_{}", p % CHANNELS))
                    .collect();
                let candidates: Vec<Candidate> = posts
                    .iter()
                    .zip(&channel_names)
                    .map(|(p, c)| model.candidate(c, 5000 + p, &contents[*p as usize]))
                    .collect();
                assert!(candidates.iter().all(|c| matches!(c, Candidate::Known(_))));
                let mut scores = Vec::new();
                model.score(row, &candidates, &mut scores);
                for (a, b) in scores.iter().zip(&expected_values) {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "{:?}: rust {a} vs tch {b}",
                        config.variant
                    );
                }
            }
        }
    }
}

#[test]
fn a_post_newer_than_the_model_scores_as_the_trainer_would_start_it() {
    // The trainer's own way to give a new post a row is to grow the network: from its channel's
    // average post, or (content network) from zero plus its content. The scorer must agree.
    for (seed, config) in [
        ModelConfig::default(),
        ModelConfig {
            variant: Variant::ContentMlp,
            ..ModelConfig::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let network = random_network(&config, 77 + seed as i64);
        let (weights, vocab) = files(&network);
        let model = ScoringModel::load(&weights, &vocab).unwrap();
        // A copy of the same weights (the seed is global and other tests use it concurrently).
        let copy = network
            .named_tensors()
            .iter()
            .map(|(n, t)| (n.to_string(), t.detach().copy()))
            .collect();
        let mut grown = Network::from_named(&config, copy, Device::Cpu).unwrap();
        let mut post_channels: Vec<i64> = (0..POSTS).map(|p| p % CHANNELS).collect();
        post_channels.push(3);
        grown
            .grow(
                Sizes {
                    users: USERS,
                    posts: POSTS + 1,
                    channels: CHANNELS,
                },
                &post_channels,
            )
            .unwrap();
        let contents: Vec<PostFeatures> = (0..=POSTS).map(content).collect();
        grown.add_post_contents(&contents);
        let expected = grown.predict(&Batch {
            users: Tensor::from_slice(&[4_i64]),
            posts: Tensor::from_slice(&[POSTS]),
            channels: Tensor::from_slice(&[3_i64]),
            id_kept: None,
        });
        let new_content = &contents[POSTS as usize];
        let new_post = model.candidate("channel_3", 999_999, new_content);
        assert_eq!(
            new_post,
            Candidate::New {
                channel: "channel_3",
                content: new_content,
            }
        );
        let mut scores = Vec::new();
        model.score(model.user_row(1004).unwrap(), &[new_post], &mut scores);
        // Worked out once (as the ranker keeps it per model and post), the same score exactly.
        let part = model.new_post_part("channel_3", new_content);
        let mut computed = Vec::new();
        model.score(
            model.user_row(1004).unwrap(),
            &[part.candidate()],
            &mut computed,
        );
        assert_eq!(computed, scores, "{:?}", config.variant);
        let expected = expected.double_value(&[0]) as f32;
        assert!(
            (scores[0] - expected).abs() < 1e-5,
            "{:?}: {} vs {expected}",
            config.variant,
            scores[0]
        );
        if config.variant == Variant::ContentMlp {
            // Content matters: another post of the same channel scores differently (for some
            // people at least: a saturated sigmoid hides differences for others).
            let other = content(POSTS + 3);
            let pair = [
                model.candidate("channel_3", 999_999, new_content),
                model.candidate("channel_3", 999_998, &other),
            ];
            let largest_difference = (0..USERS as usize)
                .map(|row| {
                    model.score(row, &pair, &mut scores);
                    (scores[0] - scores[1]).abs()
                })
                .fold(0f32, f32::max);
            assert!(largest_difference > 1e-3, "{largest_difference}");
        }
    }
}

#[test]
fn a_model_of_another_feature_version_is_refused() {
    let config = ModelConfig {
        variant: Variant::ContentMlp,
        ..ModelConfig::default()
    };
    let network = random_network(&config, 3);
    let (_, vocab) = files(&network);
    let mut weights = Vec::new();
    write_network(&network, &[("features", "0".to_owned())], &mut weights).unwrap();
    let error = ScoringModel::load(&weights, &vocab).err().expect("refused");
    assert!(error.to_string().contains("features version"), "{error}");
}

#[test]
fn mismatched_files_are_refused() {
    let network = random_network(&ModelConfig::default(), 5);
    let (weights, _) = files(&network);
    let short_vocab =
        serde_json::json!({"users": [1], "channels": ["a"], "posts": [[0, 1]]}).to_string();
    assert!(ScoringModel::load(&weights, short_vocab.as_bytes()).is_err());
    assert!(ScoringModel::load(b"not safetensors", short_vocab.as_bytes()).is_err());
}
