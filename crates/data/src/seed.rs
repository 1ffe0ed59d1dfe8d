//! Seeds derived from a run's seed: SplitMix64 (Steele, Lea & Flood 2014),
//! defined once so every stage mixes seeds the same way. Nearby inputs
//! (iteration 3 and 4, batch 0 and 1) give unrelated outputs.

/// SplitMix64's increment, ⌊2⁶⁴/φ⌋.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser (Stafford's "Mix13"): a bijection of u64 whose
/// every output bit depends on every input bit.
pub fn finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One SplitMix64 step from state `z`: the generator's output after it.
pub fn splitmix(z: u64) -> u64 {
    finalise(z.wrapping_add(GOLDEN_GAMMA))
}

/// One seed from `seed` and a path of indices (iteration, batch, row…):
/// `splitmix(… splitmix(splitmix(seed) ^ i₀) ^ i₁ …)`. The order of the
/// indices matters.
pub fn mix_seed(seed: u64, indices: &[u64]) -> u64 {
    indices.iter().fold(splitmix(seed), |z, &i| splitmix(z ^ i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first output of SplitMix64 seeded with 0, as published with the
    /// reference implementation (and Java's `SplittableRandom`).
    #[test]
    fn splitmix_matches_the_reference_generator() {
        assert_eq!(splitmix(0), 0xE220_A839_7B1D_CDAF);
        // The second output is the step from the first state.
        assert_eq!(splitmix(GOLDEN_GAMMA), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn mixing_is_a_fold_of_splitmix() {
        assert_eq!(mix_seed(7, &[]), splitmix(7));
        assert_eq!(mix_seed(7, &[3]), splitmix(splitmix(7) ^ 3));
        assert_eq!(
            mix_seed(7, &[3, 9]),
            splitmix(splitmix(splitmix(7) ^ 3) ^ 9)
        );
        let s = mix_seed(1, &[2, 3]);
        assert_ne!(s, mix_seed(0, &[2, 3]));
        assert_ne!(s, mix_seed(1, &[3, 3]));
        assert_ne!(s, mix_seed(1, &[2, 4]));
        assert_ne!(s, mix_seed(1, &[3, 2]), "the order matters");
        assert_ne!(mix_seed(1, &[2]), mix_seed(1, &[3]));
    }
}
