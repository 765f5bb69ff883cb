//! The Grafana dashboards' queries, for checking them against a real Prometheus.

use std::path::Path;

/// One panel query.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub dashboard: String,
    pub panel: String,
    pub expr: String,
}

/// Every `expr` of every panel (rows' nested panels included) of every `*.json` in `dir`.
pub fn panel_queries(dir: &Path) -> anyhow::Result<Vec<PanelQuery>> {
    let mut queries = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    files.sort();
    for file in files {
        let dashboard: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let title = dashboard["title"].as_str().unwrap_or_default().to_owned();
        let mut panels: Vec<&serde_json::Value> = Vec::new();
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            panels.push(panel);
            panels.extend(panel["panels"].as_array().into_iter().flatten());
        }
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    queries.push(PanelQuery {
                        dashboard: title.clone(),
                        panel: panel["title"].as_str().unwrap_or_default().to_owned(),
                        expr: expr.to_owned(),
                    });
                }
            }
        }
    }
    Ok(queries)
}

/// The query as Grafana would send it: its interval variables filled in.
pub fn as_sent(expr: &str, rate_interval: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$__interval", rate_interval)
        .replace("$__range", "5m")
}
