//! Fetching a policy (RFC 8461 §3.3): HTTPS GET of
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt` with the certificate checked against that
//! name, no redirect followed, a bounded body, a whole-fetch timeout, `text/plain` only.
//!
//! The request is HTTP/1.0 so that the answer is never chunked and ends with the connection:
//! the client stays a few lines instead of a general HTTP client.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::split_host_port;
use crate::delivery::relay::mx;
use crate::dns::Dns;

/// The largest policy body taken (RFC 8461 §3.3 suggests 64 KiB).
pub const MAX_BODY: usize = 64 << 10;
/// The largest status line and headers taken.
const MAX_HEAD: usize = 8 << 10;

/// Where and how to fetch one domain's policy.
pub struct Request<'a> {
    pub domain: &'a str,
    /// host:port to connect to instead of `mta-sts.<domain>:443`.
    pub connect_to: Option<&'a str>,
    pub tls: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
}

/// The policy host's name for `domain`.
pub fn policy_host(domain: &str) -> String {
    format!("mta-sts.{domain}")
}

/// The policy body, or why there is none.
pub async fn fetch(dns: &dyn Dns, request: &Request<'_>) -> Result<String, String> {
    tokio::time::timeout(request.timeout, fetch_unbounded(dns, request))
        .await
        .map_err(|_| format!("timed out after {:?}", request.timeout))?
}

async fn fetch_unbounded(dns: &dyn Dns, request: &Request<'_>) -> Result<String, String> {
    let host = policy_host(request.domain);
    let (connect_host, port) = match request.connect_to {
        Some(host_port) => {
            split_host_port(host_port).ok_or_else(|| format!("bad host:port {host_port:?}"))?
        }
        None => (host.clone(), 443),
    };
    let addrs = mx::addresses(dns, &connect_host, port)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut last = format!("no address for {connect_host}");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return get(tcp, &host, request.tls.clone()).await,
            Err(e) => last = format!("connect to {host}[{addr}]: {e}"),
        }
    }
    Err(last)
}

async fn get(tcp: TcpStream, host: &str, tls: Arc<rustls::ClientConfig>) -> Result<String, String> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a host name"))?;
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))?;
    let request = format!(
        "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\n\
         User-Agent: mailgate\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("request to {host}: {e}"))?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A server that closes without close_notify: the length check below still holds.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(format!("reading from {host}: {e}")),
        };
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if response.len() > MAX_HEAD + MAX_BODY {
            return Err(format!("{host}: the answer exceeds {MAX_BODY} bytes"));
        }
    }
    let body = parse_response(&response).map_err(|e| format!("{host}: {e}"))?;
    String::from_utf8(body.to_vec()).map_err(|_| format!("{host}: the policy is not UTF-8"))
}

/// The body of an HTTP/1.x answer, when it is a `200` of type `text/plain` within the bounds.
pub fn parse_response(response: &[u8]) -> Result<&[u8], String> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .filter(|&end| end <= MAX_HEAD)
        .ok_or("no complete HTTP header")?;
    let head = std::str::from_utf8(&response[..end]).map_err(|_| "a header that is not text")?;
    let body = &response[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut words = status.splitn(3, ' ');
    let (version, code) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 answer: {status:?}"));
    }
    if code != "200" {
        // Redirects included: RFC 8461 §3.3 forbids following them.
        return Err(format!("answered {status:?}"));
    }
    let (mut plain, mut length) = (false, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-type") {
            let media = value.split(';').next().unwrap_or("").trim();
            plain = media.eq_ignore_ascii_case("text/plain");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "a bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a transfer encoding on an HTTP/1.0 request".into());
        }
    }
    if !plain {
        return Err("the policy is not text/plain".into());
    }
    let body = match length {
        Some(length) => body
            .get(..length)
            .ok_or("the answer is shorter than its Content-Length")?,
        None => body,
    };
    if body.len() > MAX_BODY {
        return Err(format!("the policy exceeds {MAX_BODY} bytes"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_a_plain_200_within_bounds() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
                   Content-Length: 5\r\n\r\nhello world";
        assert_eq!(parse_response(ok), Ok(&b"hello"[..]));
        let unsized_ = b"HTTP/1.1 200 OK\r\ncontent-type: TEXT/PLAIN\r\n\r\nall of it";
        assert_eq!(parse_response(unsized_), Ok(&b"all of it"[..]));
        let refused: [&[u8]; 6] = [
            b"HTTP/1.0 301 Moved\r\nLocation: https://x/\r\nContent-Type: text/plain\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\nx",
            b"HTTP/1.0 200 OK\r\n\r\nx",
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nx",
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n",
            b"SMTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nx",
        ];
        for answer in refused {
            assert!(
                parse_response(answer).is_err(),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
        let mut big = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        big.resize(big.len() + MAX_BODY + 1, b'a');
        assert!(parse_response(&big).is_err());
    }
}
