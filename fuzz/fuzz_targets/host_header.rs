//! Host header parsing: no panic; what parses prints back to something that parses the same.
#![no_main]
use clawker_protocol::host::parse_host_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_host_header(data) {
        let printed = match h.port {
            Some(p) => format!("{}:{p}", h.host),
            None => h.host.to_string(),
        };
        assert_eq!(parse_host_header(printed.as_bytes()).expect("reparses"), h);
    }
});
