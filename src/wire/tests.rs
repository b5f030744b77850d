use super::*;
use proptest::prelude::*;

fn hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        manifest_id: ManifestId([7; 32]),
        peer_id: [1; 16],
        since: 1_795_000_000_000,
        group: "dc1".into(),
        addrs: vec!["10.0.0.1:7000".parse().unwrap()],
    }
}

fn round_trip(m: &Message) -> Message {
    let frame = m.encode_frame();
    let len = Message::frame_len(frame[..4].try_into().unwrap()).unwrap();
    assert_eq!(len, frame.len() - 4);
    Message::decode(&frame[4..]).unwrap()
}

#[test]
fn pinned_bytes() {
    assert_eq!(
        Message::Have(0x0102_0304).encode_frame(),
        [5, 0, 0, 0, 3, 4, 3, 2, 1]
    );
    assert_eq!(Message::Done.encode_frame(), [1, 0, 0, 0, 5]);
    assert_eq!(Message::WantHaves(false).encode_frame(), [2, 0, 0, 0, 6, 0]);
    assert_eq!(Message::WantHaves(true).encode_frame(), [2, 0, 0, 0, 6, 1]);
    let bits: BitVec<u8, Lsb0> = [true, false, true, true, false, false, false, false, true]
        .into_iter()
        .collect();
    assert_eq!(
        Message::Bitfield(bits).encode_frame(),
        [7, 0, 0, 0, 2, 9, 0, 0, 0, 0b0000_1101, 0b0000_0001]
    );
    // Proof: the first frame each side sends, 37 bytes whatever the proof
    let mut proof = vec![33, 0, 0, 0, 7];
    proof.extend(0..32u8);
    let p: [u8; 32] = std::array::from_fn(|i| i as u8);
    assert_eq!(Message::Proof(p).encode_frame(), proof);
    assert_eq!(proof.len(), PROOF_FRAME_LEN);
    // Hello, every byte: the second frame, sent only after the other
    // side's proof checked out
    let mut want = vec![72, 0, 0, 0]; // length: type and body
    want.push(1); // type
    want.extend([7, 0]); // version 7
    want.extend([7; 32]); // manifest id
    want.extend([1; 16]); // peer id
    want.extend(1_795_000_000_000u64.to_le_bytes()); // started
    want.extend([3, 0, b'd', b'c', b'1']); // group
    want.extend([1, 4, 10, 0, 0, 1, 0x58, 0x1b]); // 1 address: 10.0.0.1:7000
    assert_eq!(Message::Hello(hello()).encode_frame(), want);
    assert_eq!(Request::Piece(258).encode(), [1, 2, 1, 0, 0]);
    assert_eq!(Request::Manifest.encode(), [2, 0, 0, 0, 0]);
    assert_eq!(Request::Outboard(258).encode(), [3, 2, 1, 0, 0]);
    let mut wanted = bitvec::bitvec![u8, bitvec::order::Lsb0; 0; 10];
    wanted.set(0, true);
    wanted.set(9, true);
    assert_eq!(
        Request::Blocks { piece: 1, wanted }.encode(),
        [4, 1, 0, 0, 0, 10, 0, 0, 0, 0b1, 0b10]
    );
    let hints = vec![[0xab, 0xcd], [1, 2]];
    assert_eq!(
        Request::Delta { piece: 3, hints }.encode(),
        [5, 3, 0, 0, 0, 2, 0, 0, 0, 0xab, 0xcd, 1, 2]
    );
}

/// A request is read in steps (`Request::more`) and never past the
/// limits: a Blocks request of a 1 GiB piece at most.
#[test]
fn requests_are_read_in_bounded_steps() {
    let mut wanted = bitvec::bitvec![u8, bitvec::order::Lsb0; 0; 64];
    wanted.set(63, true);
    let whole = Request::Blocks { piece: 7, wanted }.encode();
    assert_eq!(Request::more(&whole[..5]).unwrap(), 4);
    assert_eq!(Request::more(&whole[..9]).unwrap(), 8);
    assert_eq!(Request::more(&whole).unwrap(), 0);
    assert_eq!(Request::more(&[1, 0, 0, 0, 0]).unwrap(), 0);
    assert!(Request::more(&[9, 0, 0, 0, 0]).is_err());
    let too_many = [4, 0, 0, 0, 0, 1, 0, 1, 0];
    assert!(Request::more(&too_many).is_err());
    assert_eq!(Request::decode(&whole).unwrap().piece(), Some(7));
    // padding bits set, short bitmap, trailing bytes
    assert!(Request::decode(&[4, 0, 0, 0, 0, 3, 0, 0, 0, 0b1000]).is_err());
    assert!(Request::decode(&[4, 0, 0, 0, 0, 9, 0, 0, 0, 0]).is_err());
    assert!(Request::decode(&[1, 0, 0, 0, 0, 0]).is_err());
    // Delta: two bytes of hint per block, at most MAX_DELTA_BLOCKS
    let whole = Request::Delta {
        piece: 9,
        hints: vec![[7, 7]; MAX_DELTA_BLOCKS],
    }
    .encode();
    assert_eq!(whole.len(), MAX_REQUEST_LEN);
    assert_eq!(Request::more(&whole[..5]).unwrap(), 4);
    assert_eq!(Request::more(&whole[..9]).unwrap(), 2 * MAX_DELTA_BLOCKS);
    assert_eq!(Request::decode(&whole).unwrap().piece(), Some(9));
    let mut too_many = whole[..9].to_vec();
    too_many[5..9].copy_from_slice(&(MAX_DELTA_BLOCKS as u32 + 1).to_le_bytes());
    assert!(Request::more(&too_many).is_err());
    assert!(Request::decode(&[5, 0, 0, 0, 0, 2, 0, 0, 0, 1, 2, 3]).is_err());
}

#[test]
fn every_message_round_trips() {
    let msgs = [
        Message::Proof([8; 32]),
        Message::Hello(hello()),
        Message::Bitfield(bitvec![u8, Lsb0; 1, 0, 1]),
        Message::Have(42),
        Message::Peers(
            vec![PeerInfo {
                id: [3; 16],
                group: "dc2".into(),
                addrs: vec!["[::1]:5".parse().unwrap(), "1.2.3.4:5".parse().unwrap()],
            }]
            .into(),
        ),
        Message::Done,
        Message::WantHaves(false),
        Message::WantHaves(true),
    ];
    for m in &msgs {
        assert_eq!(&round_trip(m), m);
    }
}

#[test]
fn a_proof_frame_is_exactly_a_proof() {
    let frame: [u8; PROOF_FRAME_LEN] = Message::Proof([5; 32]).encode_frame().try_into().unwrap();
    assert_eq!(Message::decode_proof_frame(&frame).unwrap(), [5; 32]);
    // another type, another length, or a Hello's first 37 bytes: refused
    let mut other_type = frame;
    other_type[4] = code::HELLO;
    let mut other_len = frame;
    other_len[0] = 34;
    let hello: [u8; PROOF_FRAME_LEN] = Message::Hello(hello()).encode_frame()[..PROOF_FRAME_LEN]
        .try_into()
        .unwrap();
    for bad in [other_type, other_len, hello, [0; PROOF_FRAME_LEN]] {
        assert!(Message::decode_proof_frame(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn alpn_names_the_version() {
    assert_eq!(alpn(PROTOCOL_VERSION), ALPN);
    assert_eq!(alpn_version(ALPN), Some(PROTOCOL_VERSION));
    assert_eq!(alpn_version(b"swarm/12"), Some(12));
    for bad in [
        &b"swarm/"[..],
        b"swarm/04",
        b"swarm/x",
        b"h3",
        b"swarm/99999999",
        b"swarm/-1",
    ] {
        assert_eq!(alpn_version(bad), None, "{bad:?}");
    }
}

#[test]
fn limits_are_enforced() {
    assert!(Message::frame_len((MAX_FRAME as u32 + 1).to_le_bytes()).is_err());
    assert!(Message::frame_len([0; 4]).is_err());
    // bitfield claiming more bits than allowed
    let mut f = vec![code::BITFIELD];
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Message::decode(&f),
        Err(DecodeError::TooLarge { .. })
    ));
    // padding bits set
    assert!(Message::decode(&[code::BITFIELD, 3, 0, 0, 0, 0xff]).is_err());
    // group name too long
    let mut h = hello();
    h.group = "x".repeat(65);
    assert!(Message::decode(&Message::Hello(h).encode_frame()[4..]).is_err());
    assert!(Message::decode(&[99]).is_err());
    // the want-haves flag is 0 or 1, nothing else
    assert!(Message::decode(&[code::WANT_HAVES, 2]).is_err());
    assert!(Message::decode(&[code::WANT_HAVES]).is_err());
    assert!(Message::decode(&[]).is_err());
    assert!(Request::decode(&[2, 1, 0, 0, 0]).is_err());
    assert_eq!(Status::decode(3).unwrap(), Status::Changed);
    assert!(Status::decode(4).is_err());
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = Message::decode(&bytes) {
            // whatever decodes re-encodes to the same bytes
            prop_assert_eq!(&m.encode_frame()[4..], &bytes[..]);
        }
    }

    #[test]
    fn bitfields_round_trip(bits in proptest::collection::vec(any::<bool>(), 0..3000)) {
        let bv: BitVec<u8, Lsb0> = bits.into_iter().collect();
        let m = Message::Bitfield(bv);
        prop_assert_eq!(round_trip(&m), m);
    }
}

#[test]
fn the_largest_valid_frames_fit_max_frame_for() {
    let addrs: Vec<SocketAddr> = (0..MAX_ADDRS)
        .map(|i| format!("[2001:db8::{i}]:7000").parse().unwrap())
        .collect();
    let peers: Vec<PeerInfo> = (0..MAX_PEERS)
        .map(|i| PeerInfo {
            id: [i as u8; 16],
            group: "g".repeat(MAX_GROUP_LEN),
            addrs: addrs.clone(),
        })
        .collect();
    let frame = Message::Peers(peers.into()).encode_frame();
    assert_eq!(frame.len() - 4, max_frame_for(0));
    for pieces in [0, 1, 9, 1 << 16, 1 << 21, MAX_BITFIELD_BITS] {
        let bits = BitVec::<u8, Lsb0>::repeat(true, pieces);
        let frame = Message::Bitfield(bits).encode_frame();
        assert!(frame.len() - 4 <= max_frame_for(pieces), "{pieces} pieces");
    }
    let frame = Message::Hello(Hello {
        group: "g".repeat(MAX_GROUP_LEN),
        addrs,
        ..hello()
    })
    .encode_frame();
    assert!(frame.len() - 4 <= max_frame_for(0));
}

#[test]
fn manifest_answer_header_round_trips_and_is_bounded() {
    let h = manifest_answer_header(70_000);
    assert_eq!(Status::decode(h[0]).unwrap(), Status::Ok);
    assert_eq!(
        manifest_answer_len(h[1..].try_into().unwrap()).unwrap(),
        70_000
    );
    let max = crate::manifest::MAX_MANIFEST_BYTES;
    assert!(manifest_answer_len((max as u32).to_le_bytes()).is_ok());
    assert!(manifest_answer_len((max as u32 + 1).to_le_bytes()).is_err());
    assert!(manifest_answer_len(u32::MAX.to_le_bytes()).is_err());
}
