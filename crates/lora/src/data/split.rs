//! The train/held-out split: seeded, stratified by category, by groups.
//!
//! Rows of one group (same or near-duplicate question, see [`super::dedup`]) always land on the
//! same side. Within each category, groups are ordered by their smallest sample id, shuffled
//! with a ChaCha8 generator seeded from the seed and the category's name, and taken into the
//! held-out side while they fit its target (`round(rows × ratio)`, never the whole category).
//! The result depends only on the seed and the samples' content, not on the input's order.

use super::report::NO_CATEGORY;
use super::Sample;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

fn name_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in s.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// For each of `keep` (indices into `samples`, with group labels `groups`), whether it goes to
/// the held-out side.
pub fn split(samples: &[Sample], keep: &[usize], groups: &[usize], ratio: f64, seed: u64) -> Vec<bool> {
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (pos, &g) in groups.iter().enumerate() {
        members.entry(g).or_default().push(pos);
    }
    // Stratum of a group: its most common category (ties: the smallest name).
    let mut strata: BTreeMap<String, Vec<(String, Vec<usize>)>> = BTreeMap::new();
    for list in members.into_values() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for &pos in &list {
            *counts.entry(samples[keep[pos]].category.as_deref().unwrap_or(NO_CATEGORY)).or_default() += 1;
        }
        let cat = counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map_or(NO_CATEGORY, |(c, _)| c).to_string();
        let key = list.iter().map(|&pos| samples[keep[pos]].id.clone()).min().unwrap_or_default();
        strata.entry(cat).or_default().push((key, list));
    }
    let mut held = vec![false; keep.len()];
    for (cat, mut gs) in strata {
        gs.sort();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ name_hash(&cat));
        gs.shuffle(&mut rng);
        let n: usize = gs.iter().map(|(_, l)| l.len()).sum();
        let target = ((n as f64 * ratio).round() as usize).min(n.saturating_sub(1));
        let mut taken = 0;
        for (_, list) in gs {
            if taken + list.len() <= target {
                taken += list.len();
                for pos in list {
                    held[pos] = true;
                }
            }
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Message, Role};

    fn sample(i: usize, cat: &str) -> Sample {
        Sample {
            id: format!("{:016x}", name_hash(&i.to_string())),
            messages: vec![
                Message { role: Role::User, content: format!("q{i}") },
                Message { role: Role::Assistant, content: "a".into() },
            ],
            category: Some(cat.into()),
            source_line: i + 1,
        }
    }

    #[test]
    fn stratified_deterministic_and_grouped() {
        let samples: Vec<Sample> = (0..200).map(|i| sample(i, if i % 4 == 0 { "a" } else { "b" })).collect();
        let keep: Vec<usize> = (0..200).collect();
        // Pairs (0,1), (2,3)… are groups.
        let groups: Vec<usize> = (0..200).map(|i| i / 2 * 2).collect();
        let h1 = split(&samples, &keep, &groups, 0.1, 7);
        let h2 = split(&samples, &keep, &groups, 0.1, 7);
        assert_eq!(h1, h2);
        let h3 = split(&samples, &keep, &groups, 0.1, 8);
        assert_ne!(h1, h3);
        for i in (0..200).step_by(2) {
            assert_eq!(h1[i], h1[i + 1], "group split apart");
        }
        let held_a = (0..200).filter(|&i| h1[i] && samples[i].category.as_deref() == Some("a")).count();
        let held_b = (0..200).filter(|&i| h1[i] && samples[i].category.as_deref() == Some("b")).count();
        // Groups of {a,b} pairs: the stratum is decided by majority/tie → "a" for pairs (4k, 4k+1).
        let total = h1.iter().filter(|&&h| h).count();
        assert!((18..=22).contains(&total), "{total}");
        assert!(held_a > 0 && held_b > 0);
    }

    #[test]
    fn independent_of_input_order() {
        let samples: Vec<Sample> = (0..100).map(|i| sample(i, ["x", "y", "z"][i % 3])).collect();
        let keep: Vec<usize> = (0..100).collect();
        let h = split(&samples, &keep, &keep, 0.2, 1);
        let rev: Vec<usize> = (0..100).rev().collect();
        let h_rev = split(&samples, &rev, &rev, 0.2, 1);
        for (pos, &i) in rev.iter().enumerate() {
            assert_eq!(h_rev[pos], h[i]);
        }
    }

    #[test]
    fn small_categories_keep_a_training_row() {
        let samples: Vec<Sample> = (0..3).map(|i| sample(i, "tiny")).collect();
        let keep = vec![0, 1, 2];
        let h = split(&samples, &keep, &keep, 0.9, 1);
        assert!(h.iter().any(|&x| !x));
    }
}
