use super::*;

fn head(s: &str) -> RequestHead {
    parse_head(s.as_bytes()).unwrap().unwrap().0
}

#[test]
fn connect_heads_parse() {
    let raw = "CONNECT media.example.com:443 HTTP/1.1\r\nHost: media.example.com:443\r\nConnection: close\r\n\r\nTLS";
    let (h, n) = parse_head(raw.as_bytes()).unwrap().unwrap();
    assert_eq!(&raw[n..], "TLS", "bytes after the head are the tunnel's");
    assert_eq!(
        h.target,
        Target::Tunnel {
            host: url::Host::Domain("media.example.com".into()),
            port: 443
        }
    );
    assert_eq!(h.origin_request(), None);
    let h = head("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n");
    assert_eq!(
        h.target,
        Target::Tunnel {
            host: url::Host::Ipv6("::1".parse().unwrap()),
            port: 8443
        }
    );
    let h = head("CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n");
    assert!(matches!(
        h.target,
        Target::Tunnel {
            host: url::Host::Ipv4(_),
            port: 443
        }
    ));
}

#[test]
fn absolute_heads_become_origin_form_with_connection_close() {
    let h = head(
        "GET http://cdn.example.com:8080/a/b.m3u8?sig=1 HTTP/1.1\r\nUser-Agent: Lavf\r\nIcy-MetaData: 1\r\n\
         Host: cdn.example.com:8080\r\nConnection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
    );
    assert_eq!(
        h.target,
        Target::Absolute {
            host: url::Host::Domain("cdn.example.com".into()),
            port: 8080,
            path: "/a/b.m3u8?sig=1".into()
        }
    );
    let out = String::from_utf8(h.origin_request().unwrap()).unwrap();
    assert_eq!(
        out,
        "GET /a/b.m3u8?sig=1 HTTP/1.1\r\nUser-Agent: Lavf\r\nIcy-MetaData: 1\r\nHost: cdn.example.com:8080\r\n\
         Connection: close\r\n\r\n"
    );
    // No Host header: one is made from the target.
    let out = String::from_utf8(head("HEAD http://h.example HTTP/1.0\r\n\r\n").origin_request().unwrap()).unwrap();
    assert_eq!(out, "HEAD / HTTP/1.0\r\nHost: h.example\r\nConnection: close\r\n\r\n");
}

#[test]
fn incomplete_heads_ask_for_more_and_bad_ones_are_refused() {
    assert_eq!(parse_head(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n"), Ok(None));
    assert_eq!(parse_head(b""), Ok(None));
    assert_eq!(parse_head(&vec![b'a'; MAX_HEAD + 1]), Err(ProxyError::TooLarge));
    let many = format!("GET http://h/ HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(MAX_HEADERS + 1));
    assert_eq!(parse_head(many.as_bytes()), Err(ProxyError::TooLarge));
    for bad in [
        "GET http://h/ HTTP/2\r\n\r\n",
        "GET  http://h/ HTTP/1.1\r\n\r\n",
        "GET http://h/\r\n\r\n",
        "CONNECT h HTTP/1.1\r\n\r\n",
        "CONNECT h:0 HTTP/1.1\r\n\r\n",
        "CONNECT h:99999 HTTP/1.1\r\n\r\n",
        "CONNECT user@h:443 HTTP/1.1\r\n\r\n",
        "CONNECT :443 HTTP/1.1\r\n\r\n",
        "GET /relative HTTP/1.1\r\n\r\n",
        "GET http://u:p@h/ HTTP/1.1\r\n\r\n",
        "GET http://h/ HTTP/1.1\r\nNo colon\r\n\r\n",
        "GET http://h/ HTTP/1.1\r\n folded: x\r\n\r\n",
        "GET http://h/ HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "GET http://h/\x01 HTTP/1.1\r\n\r\n",
    ] {
        assert!(
            matches!(parse_head(bad.as_bytes()), Err(ProxyError::Malformed(_))),
            "{bad:?}: {:?}",
            parse_head(bad.as_bytes())
        );
    }
    assert_eq!(
        parse_head(b"POST http://h/ HTTP/1.1\r\n\r\n"),
        Err(ProxyError::Method("POST".into()))
    );
    assert_eq!(parse_head(b"GET https://h/ HTTP/1.1\r\n\r\n"), Err(ProxyError::Scheme));
    assert_eq!(
        parse_head(b"GET file:///etc/passwd HTTP/1.1\r\n\r\n"),
        Err(ProxyError::Scheme)
    );
}

#[test]
fn proxy_credentials_carry_the_session_token() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let with = |v: String| head(&format!("CONNECT h:443 HTTP/1.1\r\nProxy-Authorization: {v}\r\n\r\n"));
    assert_eq!(
        with(format!("Basic {}", b64("roomgate:tok3n"))).proxy_token(),
        Some("tok3n".into())
    );
    assert_eq!(
        with(format!("basic  {}", b64("roomgate:tok3n"))).proxy_token(),
        Some("tok3n".into())
    );
    assert_eq!(with(format!("Basic {}", b64("other:tok3n"))).proxy_token(), None);
    assert_eq!(with(format!("Basic {}", b64("roomgate:"))).proxy_token(), None);
    assert_eq!(with("Bearer tok3n".into()).proxy_token(), None);
    assert_eq!(with("Basic !!!".into()).proxy_token(), None);
    assert_eq!(head("CONNECT h:443 HTTP/1.1\r\n\r\n").proxy_token(), None);
}

#[test]
fn response_statuses() {
    assert_eq!(response_status(b"HTTP/1.1 302 Found\r\nLocation: x\r\n"), Some(302));
    assert_eq!(response_status(b"HTTP/1.0 200 OK\r\n"), Some(200));
    assert_eq!(response_status(b"ICY 200 OK\r\n"), None);
    assert_eq!(response_status(b""), None);
}

#[tokio::test]
async fn the_proxy_checks_every_target_and_forwards_allowed_ones() {
    // An origin on 127.0.0.1 that answers any request with its request line.
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = origin.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let line = req.lines().next().unwrap_or_default().to_string();
            let close = req.contains("Connection: close\r\n");
            let body = format!("{line}|close={close}");
            let _ = s
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
                .await;
        }
    });
    let proxy = SourceProxy::start(Duration::from_secs(2)).unwrap();
    assert_eq!(
        proxy.addr().ip(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "reachable from this host only"
    );
    let session = proxy.session(
        AddressPolicy {
            allow_all: false,
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        },
        "test",
    );
    let token = session
        .url()
        .split(':')
        .nth(2)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("roomgate:{token}"))
    };
    let ask = |req: String| async move {
        let mut s = TcpStream::connect(proxy_addr(&req)).await.unwrap();
        s.write_all(req.split_once('|').unwrap().1.as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    };
    fn proxy_addr(req: &str) -> SocketAddr {
        req.split_once('|').unwrap().0.parse().unwrap()
    }
    let p = proxy.addr();
    // Without credentials: a challenge.
    let out = ask(format!("{p}|GET http://{origin_addr}/x HTTP/1.1\r\n\r\n")).await;
    assert!(out.starts_with("HTTP/1.1 407"), "{out}");
    // Allowed: forwarded in origin form with Connection: close.
    let out = ask(format!(
        "{p}|GET http://{origin_addr}/x?q=1 HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
    ))
    .await;
    assert!(out.ends_with("GET /x?q=1 HTTP/1.1|close=true"), "{out}");
    // A refused address: 403, recorded, never connected.
    let out = ask(format!(
        "{p}|GET http://127.0.0.2:{}/x HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n",
        origin_addr.port()
    ))
    .await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(session.refused());
    // A tunnel to an allowed address.
    let out = ask(format!(
        "{p}|CONNECT {origin_addr} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\nGET /t HTTP/1.1\r\n\r\n"
    ))
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK"),
        "{out}"
    );
    assert!(out.ends_with("GET /t HTTP/1.1|close=false"), "{out}");
    // After the session ends its token is worthless.
    drop(session);
    let out = ask(format!(
        "{p}|GET http://{origin_addr}/x HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
    ))
    .await;
    assert!(out.starts_with("HTTP/1.1 407"), "{out}");
}
