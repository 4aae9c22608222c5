//! What the core's benchmarks share: image digests like real ones.

/// The digest of image `i`: like real ones, it differs from its neighbours in its first
/// characters (so images spread over the due index's shards as real ones do).
pub fn digest(i: usize) -> String {
    let mut x = i as u64;
    let mut hex = String::with_capacity(64);
    for _ in 0..4 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        hex.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    format!("sha256:{hex}")
}
