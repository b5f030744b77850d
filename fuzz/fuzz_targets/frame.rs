//! The wire's frame decoder and every message in it (Hello, Bitfield, Have,
//! Peers, Done): the input is a whole frame, length prefix included, as a
//! peer would send it. Whatever decodes must re-encode to a frame that
//! decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::wire::Message;

fuzz_target!(|data: &[u8]| {
    let Some((header, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(len) = Message::frame_len(*header) else {
        return;
    };
    let Some(frame) = body.get(..len) else {
        return;
    };
    if let Ok(msg) = Message::decode(frame) {
        let again = msg.encode_frame();
        let back = Message::decode(&again[4..]).expect("a re-encoded message decodes");
        assert_eq!(back, msg);
    }
});
