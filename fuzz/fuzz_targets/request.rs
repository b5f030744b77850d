//! The first bytes of a request stream and of its answer: a request
//! (Piece, Manifest, Outboard, Blocks with its bitmap, or Delta with its
//! hints) is read in the
//! steps `Request::more` gives, never past `MAX_REQUEST_LEN`, and whatever
//! decodes re-encodes to the same bytes. A status byte that decodes is the
//! status's own code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::manifest::blocks::MAX_BLOCKS;
use swarm::wire::{MAX_DELTA_BLOCKS, MAX_REQUEST_LEN, REQUEST_LEN, Request, Status};

fuzz_target!(|data: &[u8]| {
    if data.len() >= REQUEST_LEN {
        let mut len = REQUEST_LEN;
        while let Ok(more) = Request::more(&data[..len]) {
            if more == 0 {
                break;
            }
            len += more;
            assert!(len <= MAX_REQUEST_LEN, "a request past the limit");
            if len > data.len() {
                break;
            }
        }
        if len <= data.len()
            && let Ok(r) = Request::decode(&data[..len])
        {
            assert_eq!(r.encode(), &data[..len]);
            if let Request::Blocks { wanted, .. } = &r {
                assert!(wanted.len() <= MAX_BLOCKS);
            }
            if let Request::Delta { hints, .. } = &r {
                assert!(hints.len() <= MAX_DELTA_BLOCKS);
            }
            assert_eq!(Request::decode(&r.encode()).ok(), Some(r));
        }
    }
    if let Some(&s) = data.first()
        && let Ok(status) = Status::decode(s)
    {
        assert_eq!(status as u8, s);
    }
});
