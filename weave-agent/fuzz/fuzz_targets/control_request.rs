//! One request line on the control socket, as the daemon parses it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weave_agent::control::api::parse_request(data);
});
