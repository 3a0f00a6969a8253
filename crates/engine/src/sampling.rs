//! Sampling: turns one row of logits into the next token.
//!
//! Order of transforms (as llama.cpp's default chain): logit bias → repetition / frequency /
//! presence penalties → (greedy: argmax) → top-k → top-p → min-p → temperature → seeded draw.
//! Every transform is a plain function over a candidate list so it can be tested alone.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// How to pick each next token. `Default` is greedy with no penalties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; `<= 0` means greedy (argmax, ties to the lowest id).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set whose probability reaches `top_p` (1.0 = off).
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` × the top token's (0 = off).
    pub min_p: f32,
    /// CTRL repetition penalty over the last `penalty_last_n` tokens (1.0 = off): a positive
    /// logit is divided by it, a negative one multiplied.
    pub repeat_penalty: f32,
    /// Subtract `frequency_penalty × count` from a token's logit (OpenAI semantics; 0 = off).
    pub frequency_penalty: f32,
    /// Subtract `presence_penalty` from the logit of every token seen at least once (0 = off).
    pub presence_penalty: f32,
    /// How many of the most recent tokens (prompt and generated) the penalties look at
    /// (0 = none, -1 = the whole context).
    pub penalty_last_n: i32,
    /// Added to a token's logit before anything else (`f32::NEG_INFINITY` or ≤ -100 forbids
    /// it, ≥ 100 practically forces it), by token id.
    pub logit_bias: HashMap<u32, f32>,
    /// Like `logit_bias`, by text: the bias goes to every token the text tokenizes into
    /// (resolved by the backend with the model's tokenizer).
    pub logit_bias_text: Vec<(String, f32)>,
    /// RNG seed; the same seed gives the same output. `None` picks one at random.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: HashMap::new(),
            logit_bias_text: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (the default).
    pub fn greedy() -> Self {
        Self::default()
    }

    /// True when the sampler takes the argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Checks the values are in range.
    ///
    /// # Errors
    /// [`EngineError::InvalidRequest`] naming the field.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: String| Err(EngineError::invalid(m));
        if !self.temperature.is_finite() {
            return bad(format!("temperature must be finite, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!("repeat_penalty must be > 0, got {}", self.repeat_penalty));
        }
        if !self.frequency_penalty.is_finite() || !self.presence_penalty.is_finite() {
            return bad("frequency/presence penalties must be finite".into());
        }
        for (id, b) in &self.logit_bias {
            if b.is_nan() {
                return bad(format!("logit_bias for token {id} is NaN"));
            }
        }
        Ok(())
    }
}

/// One candidate token: id and current logit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Token id.
    pub id: u32,
    /// Logit after the transforms applied so far.
    pub logit: f32,
}

/// Adds `bias` to the logits of the given tokens; ≤ -100 (or -inf) removes the token.
pub fn apply_logit_bias(logits: &mut [f32], bias: &HashMap<u32, f32>) {
    for (&id, &b) in bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if b <= -100.0 { f32::NEG_INFINITY } else { *l + b };
        }
    }
}

/// True when [`apply_penalties`] would change a row: some recent tokens and a penalty that is
/// not neutral.
fn penalties_change(recent: &[u32], repeat_penalty: f32, frequency_penalty: f32, presence_penalty: f32) -> bool {
    !recent.is_empty() && (repeat_penalty != 1.0 || frequency_penalty != 0.0 || presence_penalty != 0.0)
}

/// Applies the repetition, frequency and presence penalties for the tokens in `recent`.
pub fn apply_penalties(
    logits: &mut [f32],
    recent: &[u32],
    repeat_penalty: f32,
    frequency_penalty: f32,
    presence_penalty: f32,
) {
    if !penalties_change(recent, repeat_penalty, frequency_penalty, presence_penalty) {
        return;
    }
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for &t in recent {
        *counts.entry(t).or_default() += 1;
    }
    for (&id, &count) in &counts {
        let Some(l) = logits.get_mut(id as usize) else { continue };
        if *l == f32::NEG_INFINITY {
            continue;
        }
        if *l > 0.0 {
            *l /= repeat_penalty;
        } else {
            *l *= repeat_penalty;
        }
        *l -= count as f32 * frequency_penalty + presence_penalty;
    }
}

/// The index of the largest logit (ties: lowest id); `None` if all are -inf or NaN.
///
/// Two passes written so the compiler vectorizes them: the row of a 262k-entry vocabulary is
/// scanned once per generated token, in the engine's one scheduling thread, while ggml's
/// threads wait for the next batch.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    const LANES: usize = 16;
    // Pass 1: the maximum. `x > m` is false for NaN, so NaN never wins.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &x in lanes.iter().chain(tail) {
        if x > max {
            max = x;
        }
    }
    if max == f32::NEG_INFINITY {
        return None;
    }
    // Pass 2: its first position (ties: lowest id).
    logits.iter().position(|&x| x == max).map(|i| i as u32)
}

/// Sorts candidates by logit, descending (ties: lower id first), dropping -inf ones.
pub fn sorted_candidates(logits: &[f32]) -> Vec<Candidate> {
    let mut c: Vec<Candidate> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite() || **l == f32::INFINITY)
        .map(|(i, &l)| Candidate { id: i as u32, logit: l })
        .collect();
    c.sort_by(|a, b| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id)));
    c
}

/// Relative probability below which a token is dropped before sorting: `e^-30` of the most
/// likely one. Over Gemma's 262k vocabulary the dropped mass is < 3e-8 in total, and sorting only
/// the rest turns a full sort per generated token (~15 ms, a third of Gemma's decode step
/// at temperature 0.7) into a scan.
const NEGLIGIBLE_LOG_RATIO: f32 = -30.0;

/// The candidates sampling needs, sorted like [`sorted_candidates`]: with `top_k > 0` only the
/// `k` best (selected in linear time, then sorted: the same list a full sort would truncate);
/// otherwise every token whose probability at temperature `t` is at least `e^-30` of the best's.
pub fn candidates_for(logits: &[f32], top_k: usize, t: f32) -> Vec<Candidate> {
    let cmp = |a: &Candidate, b: &Candidate| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id));
    let finite = |l: &f32| l.is_finite() || *l == f32::INFINITY;
    if top_k > 0 && top_k < logits.len() {
        let mut c: Vec<Candidate> =
            logits.iter().enumerate().filter(|(_, l)| finite(l)).map(|(i, &l)| Candidate { id: i as u32, logit: l }).collect();
        if c.len() > top_k {
            c.select_nth_unstable_by(top_k - 1, cmp);
            c.truncate(top_k);
        }
        c.sort_by(cmp);
        return c;
    }
    let max = logits.iter().copied().filter(|l| finite(l)).fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() || t <= 0.0 {
        return sorted_candidates(logits);
    }
    let floor = max + NEGLIGIBLE_LOG_RATIO * t;
    let mut c: Vec<Candidate> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| finite(l) && **l >= floor)
        .map(|(i, &l)| Candidate { id: i as u32, logit: l })
        .collect();
    c.sort_by(cmp);
    c
}

/// Softmax probabilities of sorted candidates at temperature 1.
pub fn softmax(c: &[Candidate]) -> Vec<f32> {
    let Some(max) = c.first().map(|c| c.logit) else { return Vec::new() };
    if max == f32::INFINITY {
        // A forced token (bias +inf): all mass on the infinite ones.
        let n = c.iter().filter(|c| c.logit == f32::INFINITY).count() as f32;
        return c.iter().map(|c| if c.logit == f32::INFINITY { 1.0 / n } else { 0.0 }).collect();
    }
    let exps: Vec<f64> = c.iter().map(|c| f64::from(c.logit - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// Keeps the `k` best candidates (sorted input); 0 keeps all.
pub fn top_k(c: &mut Vec<Candidate>, k: usize) {
    if k > 0 && c.len() > k {
        c.truncate(k);
    }
}

/// Keeps the smallest prefix of sorted candidates whose probability mass reaches `p`.
pub fn top_p(c: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 || c.is_empty() {
        return;
    }
    let probs = softmax(c);
    let mut acc = 0.0f32;
    let mut keep = c.len();
    for (i, pr) in probs.iter().enumerate() {
        acc += pr;
        if acc >= p {
            keep = i + 1;
            break;
        }
    }
    c.truncate(keep.max(1));
}

/// Drops candidates whose probability is below `p` × the best one's (sorted input).
pub fn min_p(c: &mut Vec<Candidate>, p: f32) {
    if p <= 0.0 || c.is_empty() {
        return;
    }
    let max = c[0].logit;
    // p_i / p_max = exp(l_i - l_max) >= p  <=>  l_i >= l_max + ln p
    let threshold = max + p.ln();
    c.retain(|x| x.logit >= threshold);
}

/// Divides the logits by the temperature.
pub fn apply_temperature(c: &mut [Candidate], t: f32) {
    if t > 0.0 && t != 1.0 {
        for x in c.iter_mut() {
            x.logit /= t;
        }
    }
}

/// Turns logits into tokens according to [`SamplingParams`], with its own seeded RNG.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    /// `logit_bias` merged with `logit_bias_text` resolved to ids.
    bias: HashMap<u32, f32>,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler for `params`; `text_bias_ids` are the ids the backend resolved for
    /// `params.logit_bias_text` (their biases add to `params.logit_bias`).
    pub fn new(params: SamplingParams, text_bias_ids: &[(u32, f32)]) -> Self {
        let mut bias = params.logit_bias.clone();
        for &(id, b) in text_bias_ids {
            *bias.entry(id).or_default() += b;
        }
        let rng = match params.seed {
            Some(s) => ChaCha8Rng::seed_from_u64(s),
            None => ChaCha8Rng::from_rng(&mut rand::rng()),
        };
        Self { params, bias, rng }
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The recent-token window the penalties look at.
    fn window<'a>(&self, history: &'a [u32]) -> &'a [u32] {
        match self.params.penalty_last_n {
            n if n < 0 => history,
            n => &history[history.len().saturating_sub(n as usize)..],
        }
    }

    /// True when bias or penalties would change a logits row given `history`.
    fn adjusts(&self, history: &[u32]) -> bool {
        let p = &self.params;
        !self.bias.is_empty()
            || penalties_change(self.window(history), p.repeat_penalty, p.frequency_penalty, p.presence_penalty)
    }

    /// Applies bias and penalties to a copy of `logits` (the distribution the sampler draws
    /// from before truncation).
    pub fn adjusted_logits(&self, logits: &[f32], history: &[u32]) -> Vec<f32> {
        let mut l = logits.to_vec();
        apply_logit_bias(&mut l, &self.bias);
        let p = &self.params;
        apply_penalties(
            &mut l,
            self.window(history),
            p.repeat_penalty,
            p.frequency_penalty,
            p.presence_penalty,
        );
        l
    }

    /// Picks the next token given the logits and the tokens so far (prompt + generated).
    ///
    /// # Errors
    /// [`EngineError::InvalidRequest`] when the bias forbids every token.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, EngineError> {
        // Copy the row only when bias or penalties change it (the common greedy and plain
        // temperature requests read it in place).
        let adjusted;
        let l: &[f32] = if self.adjusts(history) {
            adjusted = self.adjusted_logits(logits, history);
            &adjusted
        } else {
            logits
        };
        let none = || EngineError::invalid("logit bias forbids every token");
        if self.params.is_greedy() {
            return argmax(l).ok_or_else(none);
        }
        let mut c = candidates_for(l, self.params.top_k, self.params.temperature);
        if c.is_empty() {
            return Err(none());
        }
        top_k(&mut c, self.params.top_k);
        top_p(&mut c, self.params.top_p);
        min_p(&mut c, self.params.min_p);
        apply_temperature(&mut c, self.params.temperature);
        let probs = softmax(&c);
        let r: f32 = self.rng.random();
        let mut acc = 0.0;
        for (cand, p) in c.iter().zip(&probs) {
            acc += p;
            if r < acc {
                return Ok(cand.id);
            }
        }
        c.last().map(|c| c.id).ok_or_else(none)
    }
}

/// Log-softmax of a logit row (f64 accumulation), for log-probs.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let lse = f64::from(max) + sum.ln();
    logits.iter().map(|&l| (f64::from(l) - lse) as f32).collect()
}

/// The `k` most likely (id, logprob) pairs of a log-prob row, descending.
pub fn top_logprobs(logprobs: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..logprobs.len() as u32).collect();
    let k = k.min(idx.len());
    let cmp = |a: &u32, b: &u32| {
        logprobs[*b as usize].total_cmp(&logprobs[*a as usize]).then(a.cmp(b))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, logprobs[i as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.5, -1.0, 2.5]
    }

    #[test]
    fn greedy_takes_argmax_lowest_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy(), &[]);
        assert_eq!(s.sample(&logits(), &[]).unwrap(), 1);
        assert_eq!(s.sample(&[2.0, 5.0, 5.0], &[]).unwrap(), 1);
    }

    #[test]
    fn argmax_matches_a_scalar_scan_on_long_rows() {
        // The reference: first strictly greater, skipping NaN and -inf.
        fn scalar(row: &[f32]) -> Option<u32> {
            let mut best: Option<(usize, f32)> = None;
            for (i, &l) in row.iter().enumerate() {
                if !l.is_nan() && l != f32::NEG_INFINITY && best.is_none_or(|(_, b)| l > b) {
                    best = Some((i, l));
                }
            }
            best.map(|(i, _)| i as u32)
        }
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for len in [0usize, 1, 15, 16, 17, 33, 1000, 262_145] {
            let mut row: Vec<f32> = (0..len).map(|_| rng.random::<f32>() * 20.0 - 10.0).collect();
            assert_eq!(argmax(&row), scalar(&row), "len {len}");
            if len > 20 {
                // NaN and -inf never win; ties go to the lowest id, also across lanes and the tail.
                row[3] = f32::NAN;
                row[len - 1] = 50.0;
                row[len / 2 + 1] = 50.0;
                row[len / 2] = f32::NEG_INFINITY;
                assert_eq!(argmax(&row), Some((len / 2 + 1) as u32), "len {len}");
                assert_eq!(argmax(&row), scalar(&row));
            }
        }
        assert_eq!(argmax(&[f32::NAN; 40]), None);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 40]), None);
        let mut row = vec![f32::NEG_INFINITY; 40];
        row[39] = -1e30;
        assert_eq!(argmax(&row), Some(39));
    }

    #[test]
    fn penalties_apply_without_bias_and_not_otherwise() {
        // Greedy with a repeat penalty must read the adjusted row, not the raw one.
        let mut p = SamplingParams::greedy();
        p.repeat_penalty = 4.0;
        let row = [1.0, 3.0, 2.0];
        assert_eq!(Sampler::new(p.clone(), &[]).sample(&row, &[1]).unwrap(), 2);
        // An empty history leaves the row as it is.
        assert_eq!(Sampler::new(p, &[]).sample(&row, &[]).unwrap(), 1);
    }

    #[test]
    fn logit_bias_forces_and_forbids() {
        let mut p = SamplingParams::greedy();
        p.logit_bias.insert(4, 100.0);
        assert_eq!(Sampler::new(p, &[]).sample(&logits(), &[]).unwrap(), 4);
        let mut p = SamplingParams::greedy();
        p.logit_bias.insert(1, -100.0);
        assert_eq!(Sampler::new(p.clone(), &[]).sample(&logits(), &[]).unwrap(), 5);
        // Forbidden under sampling too, for every seed.
        p.temperature = 5.0;
        for seed in 0..200 {
            p.seed = Some(seed);
            assert_ne!(Sampler::new(p.clone(), &[]).sample(&logits(), &[]).unwrap(), 1);
        }
        // Text bias ids are merged in.
        let mut s = Sampler::new(SamplingParams::greedy(), &[(3, 50.0)]);
        assert_eq!(s.sample(&logits(), &[]).unwrap(), 3);
    }

    #[test]
    fn all_forbidden_is_an_error() {
        let mut p = SamplingParams::greedy();
        for i in 0..6 {
            p.logit_bias.insert(i, f32::NEG_INFINITY);
        }
        assert!(Sampler::new(p, &[]).sample(&logits(), &[]).is_err());
    }

    #[test]
    fn repetition_penalty_as_ctrl() {
        let mut l = vec![2.0, -2.0, 1.0];
        apply_penalties(&mut l, &[0, 1], 2.0, 0.0, 0.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn frequency_and_presence_penalties_as_openai() {
        let mut l = vec![2.0, 2.0, 2.0];
        apply_penalties(&mut l, &[0, 0, 0, 1], 1.0, 0.5, 0.25);
        // token 0: 2 - 3*0.5 - 0.25; token 1: 2 - 0.5 - 0.25; token 2 untouched
        assert_eq!(l, vec![0.25, 1.25, 2.0]);
    }

    #[test]
    fn penalties_change_the_choice_and_window() {
        let mut p = SamplingParams::greedy();
        p.repeat_penalty = 4.0;
        let mut s = Sampler::new(p.clone(), &[]);
        // token 1 (3.0) was just produced: 3/4 = 0.75 < 2.5 → token 5.
        assert_eq!(s.sample(&logits(), &[1]).unwrap(), 5);
        // Outside the window it is not penalised.
        p.penalty_last_n = 1;
        let mut s = Sampler::new(p, &[]);
        assert_eq!(s.sample(&logits(), &[1, 2]).unwrap(), 1);
    }

    #[test]
    fn candidates_for_matches_a_full_sort() {
        let l: Vec<f32> = (0..5000u32).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 10.0).collect();
        let full = sorted_candidates(&l);
        for k in [1usize, 3, 40, 4999] {
            let c = candidates_for(&l, k, 0.7);
            assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), full[..k].iter().map(|c| c.id).collect::<Vec<_>>());
        }
        // No top-k: only the negligible tail (relative probability < e^-30) goes.
        let mut wide = l.clone();
        wide[17] = -1000.0;
        let c = candidates_for(&wide, 0, 1.0);
        assert!(c.iter().all(|c| c.id != 17));
        assert_eq!(c.len(), 4999);
        assert_eq!(c[..50].iter().map(|c| c.id).collect::<Vec<_>>(), sorted_candidates(&wide)[..50].iter().map(|c| c.id).collect::<Vec<_>>());
    }

    #[test]
    fn top_k_top_p_min_p() {
        let mut c = sorted_candidates(&logits());
        assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1, 5, 2, 0, 3, 4]);
        top_k(&mut c, 3);
        assert_eq!(c.len(), 3);

        let mut c = sorted_candidates(&[0.0, 0.0, 0.0, 0.0]);
        top_p(&mut c, 0.5); // 0.25 + 0.25 reaches 0.5
        assert_eq!(c.len(), 2);
        let mut c = sorted_candidates(&[10.0, 0.0, 0.0]);
        top_p(&mut c, 0.9);
        assert_eq!(c.len(), 1);

        let mut c = sorted_candidates(&[0.0, (0.5f32).ln(), (0.05f32).ln()]);
        min_p(&mut c, 0.1);
        assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn temperature_scales_distribution() {
        let mut c = sorted_candidates(&[2.0, 1.0]);
        let p1 = softmax(&c)[0];
        apply_temperature(&mut c, 0.5);
        let p_cold = softmax(&c)[0];
        assert!(p_cold > p1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_distribution() {
        let mut p = SamplingParams { temperature: 1.0, seed: Some(42), ..Default::default() };
        let run = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone(), &[]);
            (0..200).map(|_| s.sample(&logits(), &[]).unwrap()).collect::<Vec<_>>()
        };
        let a = run(&p);
        assert_eq!(a, run(&p));
        p.seed = Some(43);
        let b = run(&p);
        assert_ne!(a, b);
        // Empirical frequency of the top token is close to its probability.
        let probs = softmax(&sorted_candidates(&logits()));
        let mut s = Sampler::new(p, &[]);
        let n = 20000;
        let hits = (0..n).filter(|_| s.sample(&logits(), &[]).unwrap() == 1).count();
        assert!(((hits as f32 / n as f32) - probs[0]).abs() < 0.02);
    }

    #[test]
    fn validation_names_the_field() {
        let p = SamplingParams { top_p: 0.0, ..Default::default() };
        assert!(p.validate().unwrap_err().to_string().contains("top_p"));
        assert!(SamplingParams::default().validate().is_ok());
    }

    #[test]
    fn log_softmax_and_top() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        let top = top_logprobs(&lp, 2);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2, 1]);
    }
}
