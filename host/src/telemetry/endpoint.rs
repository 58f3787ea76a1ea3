//! The metrics listener (`[metrics] address`): `GET /metrics` (OpenMetrics text) and
//! `GET /healthz` (a JSON body with the state of each dependency; 200 while the gateway can
//! serve, 503 when an essential one is down, before the listeners are bound and while
//! stopping), over HTTP/1.1 on a socket of its own so that scrapes never share the mail
//! listeners' connection limits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::metrics::Metrics;

/// Scrapes served at once; more wait for the accept loop.
const MAX_CONNECTIONS: usize = 16;
/// A client that has not sent its request head by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The OpenMetrics content type Prometheus asks for.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format, for every other client (curl, promtool, older scrapers).
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reads what is only known at scrape time (queue size, pooled instances) into the metrics.
pub type Refresh = Arc<dyn Fn(&Metrics) + Send + Sync>;

/// Asked at each `/healthz`, without waiting on anything: whether the gateway can serve, and
/// the JSON body that says how each dependency stands.
pub type Health = Arc<dyn Fn() -> (bool, String) + Send + Sync>;

/// Serves the metrics listener until the task is aborted.
pub async fn serve(
    socket: TcpListener,
    metrics: &'static Metrics,
    refresh: Refresh,
    health: Health,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, _) = match socket.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("metrics accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (refresh, health) = (refresh.clone(), health.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (refresh, health) = (refresh.clone(), health.clone());
                async move { Ok::<_, Infallible>(respond(&request, metrics, (&refresh, &health))) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("metrics connection: {e}");
            }
            drop(permit);
        });
    }
}

/// Binds the metrics address, naming the key in the error.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|e| {
        anyhow::anyhow!(
            "metrics: cannot bind {address}: {e} (set [metrics] address, or \"\" to turn metrics off)"
        )
    })
}

fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    (refresh, health): (&Refresh, &Health),
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
            refresh(metrics);
            let openmetrics = request
                .headers()
                .get_all(hyper::header::ACCEPT)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.contains("application/openmetrics-text"))
                });
            let (body, content_type) = if openmetrics {
                (metrics.render(), OPENMETRICS)
            } else {
                (classic_text(&metrics.render()), CLASSIC)
            };
            let mut response = Response::new(Full::new(Bytes::from(body)));
            if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
                response
                    .headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, value);
            }
            response
        }
        "/healthz" => {
            let (serving, body) = health();
            let status = if serving {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut response = text(status, &body);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /healthz\n",
        ),
    }
}

/// OpenMetrics text rewritten in the classic Prometheus format: a counter's metadata names
/// its samples (`x_total`, not `x`), an info family is a gauge named for its sample (`x_info`,
/// always 1), and there is no `# EOF` or `# UNIT`.
fn classic_text(openmetrics: &str) -> String {
    let mut suffixes = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        if let Some(name) = rest.strip_suffix(" counter") {
            suffixes.insert(name.to_string(), "_total");
        } else if let Some(name) = rest.strip_suffix(" info") {
            suffixes.insert(name.to_string(), "_info");
        }
    }
    let mut out = String::with_capacity(openmetrics.len() + suffixes.len() * 12);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let metadata = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match metadata {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = suffixes.get(name).copied().unwrap_or("");
                let tail = if prefix == "# TYPE " && suffix == "_info" {
                    "gauge"
                } else {
                    tail
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::classic_text;

    #[test]
    fn counters_get_their_sample_names_in_the_classic_format() {
        let open = "# HELP mailgate_bounces Bounces.\n# TYPE mailgate_bounces counter\nmailgate_bounces_total 2\n# HELP up Up.\n# TYPE up gauge\nup 1\n# EOF\n";
        let classic = classic_text(open);
        assert_eq!(
            classic,
            "# HELP mailgate_bounces_total Bounces.\n# TYPE mailgate_bounces_total counter\nmailgate_bounces_total 2\n# HELP up Up.\n# TYPE up gauge\nup 1\n"
        );
        let info = "# HELP b Build.\n# TYPE b info\nb_info{version=\"1\"} 1\n# EOF\n";
        assert_eq!(
            classic_text(info),
            "# HELP b_info Build.\n# TYPE b_info gauge\nb_info{version=\"1\"} 1\n"
        );
    }
}
