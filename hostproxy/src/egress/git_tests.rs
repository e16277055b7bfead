use super::*;

#[test]
fn only_smart_http_is_carried() {
    let t = parse(
        &Method::GET,
        "/git/GitHub.com/acme/app.git/info/refs",
        Some("service=git-upload-pack"),
    )
    .unwrap();
    assert_eq!(
        (t.host.as_str(), t.repo.as_str(), t.service),
        ("github.com", "acme/app.git", Service::Fetch)
    );
    let t = parse(
        &Method::POST,
        "/git/git.example:8443/x/y/git-receive-pack",
        None,
    )
    .unwrap();
    assert_eq!(
        (t.host.as_str(), t.repo.as_str(), t.service),
        ("git.example:8443", "x/y", Service::Push)
    );
    assert_eq!(
        parse(
            &Method::GET,
            "/git/h.example:443/r/info/refs",
            Some("service=git-receive-pack")
        )
        .unwrap()
        .host,
        "h.example"
    );
    for (m, p, q) in [
        (Method::GET, "/git/h.example/r/info/refs", None),
        (Method::GET, "/git/h.example/r/HEAD", None),
        (Method::GET, "/git/h.example/r/objects/info/packs", None),
        (
            Method::POST,
            "/git/h.example/r/git-upload-pack",
            Some("x=1"),
        ),
        (Method::PUT, "/git/h.example/r/git-receive-pack", None),
        (Method::POST, "/git/h.example/git-upload-pack", None),
        (
            Method::GET,
            "/git/h.example/info/refs",
            Some("service=git-upload-pack"),
        ),
    ] {
        assert_eq!(
            parse(&m, p, q).unwrap_err().status,
            StatusCode::NOT_FOUND,
            "{m} {p}"
        );
    }
    for p in [
        "/git/user@h.example/r/git-upload-pack",
        "/git/h.example/../r/git-upload-pack",
        "/git/h.example/a//b/git-upload-pack",
        "/git/h..x/r/git-upload-pack",
        "/git/h.example/acme/%2e%2e/other/git-receive-pack",
        "/git/h.example/acme%2Fother/git-receive-pack",
    ] {
        assert_eq!(
            parse(&Method::POST, p, None).unwrap_err().status,
            StatusCode::BAD_REQUEST,
            "{p}"
        );
    }
}

#[test]
fn the_containers_credentials_and_hop_headers_stay_behind() {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("authorization", "Basic Zm9vOmJhcg=="),
        ("cookie", "s=1"),
        ("proxy-authorization", "x"),
        ("host", "127.0.0.1:18374"),
        ("connection", "keep-alive"),
        ("content-type", "application/x-git-upload-pack-request"),
        ("content-encoding", "gzip"),
        ("git-protocol", "version=2"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    let out = upstream_headers(&h);
    let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["content-type", "content-encoding", "git-protocol"]);
}
