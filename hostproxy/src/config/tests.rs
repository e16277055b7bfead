use super::*;

#[test]
fn durations() {
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
    assert!(parse_duration("soon").is_err());
}

#[test]
fn file_overrides_defaults_and_rejects_unknown_keys() {
    let f: FileConfig = toml::from_str(
        r#"
        port = 1234
        allowed_hosts = ["devbox.local"]
        [git]
        allow_store = true
        allowed_hosts = ["GitHub.com"]
        timeout = "5s"
        "#,
    )
    .unwrap();
    let s = Settings::from_file(&f).unwrap();
    assert_eq!(s.port, 1234);
    assert!(s.git.allow_store);
    assert!(!s.git.allow_erase);
    assert_eq!(s.git.allowed_hosts, Some(vec!["github.com".into()]));
    assert_eq!(s.git.timeout, Duration::from_secs(5));
    assert_eq!(s.extra_hosts, vec![HostName::Name("devbox.local".into())]);
    assert!(toml::from_str::<FileConfig>("prot = 1").is_err());
}

#[test]
fn declared_sockets_by_spec_names_with_home_and_the_first_names_too() {
    let f: FileConfig = toml::from_str(
        r#"
        [[bridge.sockets]]
        name = "op-agent"
        path = "~/.1password/agent.sock"
        [[bridge.sockets]]
        name = "engine"
        path = "/var/run/docker.sock"
        allow_docker_socket = true
        [[sockets]]
        name = "old"
        path = "/run/old.sock"
        allow_docker = true
        "#,
    )
    .unwrap();
    let s = Settings::from_file(&f).unwrap();
    let home = crate::platform::dirs::home().unwrap();
    assert_eq!(s.sockets[0].path, home.join(".1password/agent.sock"));
    assert!(!s.sockets[0].allow_docker_socket);
    assert!(s.sockets[1].allow_docker_socket);
    assert_eq!(
        (s.sockets[2].name.as_str(), s.sockets[2].allow_docker_socket),
        ("old", true)
    );
    // The same name in both tables is a clash, and a relative path is refused.
    let twice: FileConfig = toml::from_str(
        "[[bridge.sockets]]\nname = \"a\"\npath = \"/a\"\n[[sockets]]\nname = \"a\"\npath = \"/b\"\n",
    )
    .unwrap();
    assert!(Settings::from_file(&twice).is_err());
    let relative: FileConfig =
        toml::from_str("[[bridge.sockets]]\nname = \"a\"\npath = \"a.sock\"\n").unwrap();
    assert!(Settings::from_file(&relative).is_err());
}
