//! A local stand-in for `t.me`: serves saved channel pages at `/s/<channel>`, so the scraper
//! reads real markup without the network, and the channels of a generated world beside them.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;

use crate::world::World;

/// Saved pages by the channel name their posts carry.
#[derive(Debug, Default)]
pub struct FixtureSite {
    pages: HashMap<String, String>,
    world: Option<Arc<World>>,
}

impl FixtureSite {
    /// Loads every `*.html` page in `dir` that holds posts; info pages and empty pages are left out.
    pub fn load(dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut pages = HashMap::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("reading the fixture pages in {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("html") {
                continue;
            }
            let html = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let parsed = oleg_scraper::parse::parse_page(&html);
            if let Some(first) = parsed.posts.first() {
                pages.insert(first.channel.clone(), html);
            }
        }
        anyhow::ensure!(
            !pages.is_empty(),
            "no channel page with posts in {}",
            dir.display()
        );
        Ok(Self { pages, world: None })
    }

    /// Serves `world`'s channels too.
    pub fn with_world(mut self, world: Arc<World>) -> Self {
        self.world = Some(world);
        self
    }

    /// The channels served, sorted.
    pub fn channels(&self) -> Vec<String> {
        let mut names: Vec<String> = self.pages.keys().cloned().collect();
        names.extend(self.world.iter().flat_map(|w| w.channels()));
        names.sort();
        names
    }

    /// Serves the pages on a loopback port until the runtime stops; returns the base URL.
    pub async fn serve(self) -> anyhow::Result<String> {
        let app = Router::new()
            .route("/s/{channel}", get(channel_page))
            .with_state(Arc::new(self));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the fixture site stopped");
            }
        });
        Ok(format!("http://{addr}"))
    }
}

async fn channel_page(
    Path(channel): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    State(site): State<Arc<FixtureSite>>,
) -> Response {
    let before = query.get("before");
    let page = match site.pages.get(&channel) {
        // Each saved page is its channel's newest; nothing older was saved.
        Some(_) if before.is_some() => return StatusCode::NOT_FOUND.into_response(),
        Some(html) => Some(html.clone()),
        None => site
            .world
            .as_ref()
            .and_then(|world| world.page(&channel, before.and_then(|b| b.parse().ok()))),
    };
    match page {
        Some(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        // Telegram sends unknown channels to their info page.
        None => (
            StatusCode::FOUND,
            [(header::LOCATION, format!("/{channel}"))],
        )
            .into_response(),
    }
}
