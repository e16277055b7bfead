//! `POST /notify`: the exact text as arguments, never markup or a shell; the rate limit.

use super::*;

#[tokio::test]
async fn notify_shows_the_exact_text_refuses_control_characters_and_the_seventh_a_minute() {
    let d = spawn(|_, _| {}).await;
    let title = "Agent needs you: review PR #42 — ünïcode ok";
    let body = "It's waiting on `cargo test`; $HOME and ; rm -rf / stay text";
    let (s, b) = d
        .post("/notify", json!({"title": title, "body": body}))
        .await;
    assert_eq!((s, b), (200, json!({"success": true})));
    // Two argv elements, exactly as sent (the script prints each on its own line).
    assert_eq!(
        notify_log(d.path()),
        format!("BEGIN\n{title}\n{body}\nEND\n")
    );
    for bad in [
        json!({"title": "a\u{1b}]0;pwned\u{7}"}),
        json!({"title": "ok", "body": "line\nforged"}),
        json!({"title": ""}),
        json!({"title": "x".repeat(121)}),
        json!({"title": "ok", "body": "y".repeat(1001)}),
        json!({"title": "ok", "extra": 1}),
    ] {
        let (s, b) = d.post("/notify", bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    assert_eq!(
        notify_log(d.path()).matches("BEGIN").count(),
        1,
        "no refused request reached the notifier"
    );
    // Six a minute per identity: five more pass, the seventh is 429 and shows nothing.
    for i in 0..5 {
        let (s, _) = d.post("/notify", json!({"title": format!("n{i}")})).await;
        assert_eq!(s, 200);
    }
    let r = d
        .client
        .post(format!("{}/notify", d.base))
        .bearer_auth(TOKEN)
        .json(&json!({"title": "seventh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(!notify_log(d.path()).contains("seventh"));
}

#[tokio::test]
async fn a_notification_body_is_text_not_markup() {
    // A notifier named notify-send (a recording stand-in): its body markup is escaped.
    let d = spawn(|s, dir| {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let n = bin.join("notify-send");
        e2e::recording_script(&n, &dir.join("notify.log"));
        s.notifier = Some(vec![n.display().to_string(), "--".into()]);
    })
    .await;
    let body = r#"Security update <a href="http://10.0.0.1/">click</a> & <b>now</b>"#;
    let (s, b) = d
        .post("/notify", json!({"title": "Update", "body": body}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        notify_log(d.path()),
        "BEGIN\n--\nUpdate\nSecurity update &lt;a href=\"http://10.0.0.1/\"&gt;click&lt;/a&gt; &amp; &lt;b&gt;now&lt;/b&gt;\nEND\n"
    );
}
