//! The wire's frame decoder and every message in it (Proof, Hello,
//! Bitfield, Have, Peers, Done, WantHaves): the input is a whole frame,
//! length prefix included, as a peer would send it. Whatever decodes must
//! re-encode to a frame that decodes to the same message. The first 37
//! bytes also go through the proof-frame decoder a host applies to an
//! unauthenticated peer's first bytes: it accepts exactly the frames that
//! decode to a Proof.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::wire::{Message, PROOF_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(first) = data.first_chunk::<PROOF_FRAME_LEN>() {
        let whole = Message::frame_len(first[..4].try_into().unwrap())
            .ok()
            .filter(|&n| n == PROOF_FRAME_LEN - 4)
            .and_then(|_| Message::decode(&first[4..]).ok());
        match Message::decode_proof_frame(first) {
            Ok(p) => assert_eq!(whole, Some(Message::Proof(p))),
            Err(_) => assert!(!matches!(whole, Some(Message::Proof(_)))),
        }
    }
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
