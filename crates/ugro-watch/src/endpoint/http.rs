//! The HTTP side: hyper's HTTP/1.1 server on a current-thread runtime of its own thread, so
//! no request, however slow its client, runs on the live loop's runtime.
//!
//! One request per connection (no keep-alive): a connection lasts one scrape, at most
//! [`CONNECTION_TIMEOUT`] (headers within [`HEADER_TIMEOUT`]), and at most
//! [`MAX_CONNECTIONS`] are served at once (more wait in the listen backlog). A stalled
//! scraper holds its connection and a small buffer until then, nothing else: the body is
//! the cached one (shared, not copied), inflated chunk by chunk as the client reads for a
//! scraper that does not accept gzip.

use std::convert::Infallible;
use std::io::{Cursor, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::Shared;
use super::render::{self, Rendered};

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// Longest a connection may last, request and response.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a client may take to send its request's headers.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The exposition format Prometheus's text parser reads.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Bytes inflated per chunk for a scraper that does not accept gzip.
const CHUNK: usize = 64 * 1024;

/// Starts the HTTP thread on a bound, non-blocking listener; it ends when `stop` fires.
pub(crate) fn spawn(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ugro-watch-http".into())
        .spawn(move || {
            render::lower_priority();
            rt.block_on(serve(listener, shared, stop));
            // Connections still open (a stalled scraper) are dropped, not waited for.
            rt.shutdown_background();
        })
}

async fn serve(l: std::net::TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let l = match TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("endpoint: {e}; not serving");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            p = slots.clone().acquire_owned() => p,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((s, _)) => {
                tokio::spawn(connection(s, shared.clone(), permit));
            }
            Err(e) => {
                // Out of file descriptors, typically: let connections finish first.
                tracing::warn!("endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(s: TcpStream, shared: Arc<Shared>, _slot: OwnedSemaphorePermit) {
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(respond(&shared, &req).await) }
    });
    let conn = http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(s), svc);
    match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("endpoint: connection: {e}"),
        Err(_) => tracing::debug!("endpoint: dropped a connection open for {CONNECTION_TIMEOUT:?}"),
    }
}

async fn respond(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let readable = req.method() == Method::GET || req.method() == Method::HEAD;
    match (readable, path) {
        (true, "/metrics") => metrics(shared, accepts_gzip(req.headers())).await,
        (true, "/healthz") => healthz(shared),
        (true, "/") => text(
            StatusCode::OK,
            "ugro-watch: /metrics (Prometheus text), /healthz (JSON)\n",
        ),
        (false, "/metrics" | "/healthz" | "/") => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /healthz\n",
        ),
    }
}

async fn metrics(shared: &Shared, gzip: bool) -> Response<Body> {
    let r = match render::body(shared).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("endpoint: {e}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n"));
        }
    };
    let (body, len) = if gzip {
        (Body::Full(Some(r.gzip.clone())), r.gzip.len() as u64)
    } else {
        (Body::inflate(&r), r.plain_len)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

fn healthz(shared: &Shared) -> Response<Body> {
    let v = match shared.health.lock() {
        Ok(h) => h.verdict(Instant::now()),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "health unknown\n"),
    };
    let status = if v.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut json = serde_json::to_string(&v).unwrap_or_default();
    json.push('\n');
    let mut r = Response::new(Body::Full(Some(Bytes::from(json))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(Bytes::copy_from_slice(msg.as_bytes()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*`, with a q-value above 0).
fn accepts_gzip(h: &HeaderMap) -> bool {
    let mut star = false;
    for v in h.get_all(header::ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match name.as_str() {
                "gzip" | "x-gzip" => return q > 0.0,
                "*" => star = q > 0.0,
                _ => {}
            }
        }
    }
    star
}

/// A response body: bytes in one piece, or the cached gzip body inflated chunk by chunk.
pub(crate) enum Body {
    Full(Option<Bytes>),
    Inflate {
        dec: Box<GzDecoder<Cursor<Bytes>>>,
        left: u64,
    },
}

impl Body {
    fn inflate(r: &Rendered) -> Body {
        Body::Inflate {
            dec: Box::new(GzDecoder::new(Cursor::new(r.gzip.clone()))),
            left: r.plain_len,
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Inflate { dec, left } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let mut buf = vec![0; CHUNK];
                let n = match dec.read(&mut buf) {
                    Ok(0) => return Poll::Ready(None),
                    Ok(n) => n,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                };
                buf.truncate(n);
                *left = left.saturating_sub(n as u64);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Inflate { left, .. } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Inflate { left, .. } => SizeHint::with_exact(*left),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        assert!(accepts_gzip(&with("gzip")));
        assert!(accepts_gzip(&with("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(&with("*")));
        assert!(!accepts_gzip(&with("gzip;q=0, *")));
        assert!(!accepts_gzip(&with("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_inflating_body_gives_back_the_text_in_chunks_of_its_stated_size() {
        use std::io::Write as _;
        let text: String = (0..20_000)
            .map(|i| format!("m{{n=\"{i}\"}} {i}\n"))
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let r = Rendered {
            gzip: Bytes::from(gz.finish().unwrap()),
            plain_len: text.len() as u64,
            at: Instant::now(),
        };
        let mut b = Body::inflate(&r);
        assert_eq!(
            hyper::body::Body::size_hint(&b).exact(),
            Some(text.len() as u64)
        );
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        let mut chunks = 0;
        while let Poll::Ready(Some(f)) = hyper::body::Body::poll_frame(Pin::new(&mut b), &mut cx) {
            let data = f.unwrap().into_data().unwrap();
            assert!(data.len() <= CHUNK);
            out.extend_from_slice(&data);
            chunks += 1;
        }
        assert_eq!(out, text.as_bytes());
        assert!(chunks > 1, "{chunks}");
        assert!(hyper::body::Body::is_end_stream(&b));
    }
}
