//! The streaming OpenPGP structure check and the decrypted-packet parser
//! must never panic, whatever the bytes and however they are chunked, and
//! must reach the same verdict whether fed whole or in pieces.
#![no_main]

use backstop_core::crypto::PacketInspector;
use libfuzzer_sys::fuzz_target;

fn verdict(data: &[u8], cuts: &[usize]) -> Result<(u64, usize), String> {
    let mut insp = PacketInspector::any_recipient();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        let c = c.clamp(last, data.len());
        insp.feed(&data[last..c]).map_err(|e| {
            format!("{e:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap()
                .to_string()
        })?;
        last = c;
    }
    let r = insp.finish().map_err(|e| {
        format!("{e:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap()
            .to_string()
    })?;
    Ok((r.total_len, r.recipients.len()))
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    let whole = verdict(data, &[]);
    let n = data.len().max(1);
    let cuts = [
        sel as usize % n,
        (sel as usize * 7) % n,
        (sel as usize * 31 + 1) % n,
    ];
    let mut cuts = cuts.to_vec();
    cuts.sort();
    let pieces = verdict(data, &cuts);
    assert_eq!(whole, pieces, "verdict depends on chunking (cuts {cuts:?})");
    let bytewise = if data.len() <= 512 {
        verdict(data, &(0..data.len()).collect::<Vec<_>>())
    } else {
        whole.clone()
    };
    assert_eq!(whole, bytewise, "verdict differs when fed byte by byte");
    if let Ok((total, _)) = whole {
        assert_eq!(total, data.len() as u64);
    }
    // The parser of decrypted content (literal / compressed / signatures).
    backstop_core::crypto::fuzzing::inner_packets(data, sel as usize);
});
