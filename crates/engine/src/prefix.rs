//! Prefix-cache bookkeeping: which tokens each KV-cache sequence ("slot") holds, and where
//! a new request should run so that the longest common prefix already computed is reused —
//! across chat turns and across requests (a RAG system prompt is the same every time).
//!
//! A slot's cache is only reusable under the same adapter set (LoRA changes every layer's
//! keys and values), so slots are keyed by [`AdapterKey`]. Pure logic; the backend performs
//! the plan on llama.cpp's KV cache.

/// Identifies the LoRA adapter set a KV cache was computed under (empty = base model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AdapterKey(pub Vec<(String, u32)>);

impl AdapterKey {
    /// The key for the base model.
    pub fn base() -> Self {
        Self(Vec::new())
    }
    /// The key for adapters at scales (scale 0 counts as no adapter, since it computes the same).
    pub fn new<'a>(adapters: impl IntoIterator<Item = (&'a str, f32)>) -> Self {
        let mut v: Vec<(String, u32)> = adapters
            .into_iter()
            .filter(|(_, s)| *s != 0.0)
            .map(|(n, s)| (n.to_string(), s.to_bits()))
            .collect();
        v.sort();
        Self(v)
    }
    /// True for the base model.
    pub fn is_base(&self) -> bool {
        self.0.is_empty()
    }
}

/// What one slot holds.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    /// Tokens whose keys/values are in this slot's KV cache, positions 0..len.
    pub tokens: Vec<u32>,
    /// The adapter set they were computed under.
    pub key: AdapterKey,
    /// Whether a request is running in it.
    pub busy: bool,
    /// Logical time of last use (for least-recently-used choice).
    pub last_used: u64,
}

/// Where to run a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The slot to run in.
    pub slot: usize,
    /// Copy `len` cached tokens from slot `src` first (`Some((src, len))`), because another
    /// slot holds a longer common prefix.
    pub copy_from: Option<(usize, usize)>,
    /// How many prompt tokens are already cached after the copy (evaluation starts here).
    pub reuse: usize,
}

/// The state of all slots.
#[derive(Debug, Clone)]
pub struct PrefixCache {
    slots: Vec<Slot>,
    clock: u64,
}

/// Length of the common prefix of two token sequences.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Copying a prefix from another slot pays off only when it saves at least this many tokens.
const MIN_COPY: usize = 16;

impl PrefixCache {
    /// `n` empty slots.
    pub fn new(n: usize) -> Self {
        Self { slots: vec![Slot::default(); n], clock: 0 }
    }

    /// The slots.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// True when some slot is free.
    pub fn has_free(&self) -> bool {
        self.slots.iter().any(|s| !s.busy)
    }

    /// Chooses a free slot for `prompt` under `key`, or `None` when all are busy.
    ///
    /// At least one prompt token is always left to evaluate (its logits start generation).
    pub fn plan(&self, prompt: &[u32], key: &AdapterKey) -> Option<Plan> {
        let cap = prompt.len().saturating_sub(1);
        let lcp = |s: &Slot| if s.key == *key { common_prefix(&s.tokens, prompt).min(cap) } else { 0 };
        // Best free slot: longest own prefix, then least recently used (keeps hot caches).
        let (slot, own) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy)
            .map(|(i, s)| (i, lcp(s)))
            .max_by(|a, b| {
                a.1.cmp(&b.1).then_with(|| self.slots[b.0].last_used.cmp(&self.slots[a.0].last_used))
            })?;
        // Any slot (busy or not) with a longer prefix can lend it.
        let donor = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != slot)
            .map(|(i, s)| (i, lcp(s)))
            .max_by_key(|&(i, l)| (l, std::cmp::Reverse(i)));
        match donor {
            Some((src, len)) if len >= own + MIN_COPY => {
                Some(Plan { slot, copy_from: Some((src, len)), reuse: len })
            }
            _ => Some(Plan { slot, copy_from: None, reuse: own }),
        }
    }

    /// Marks the plan's slot busy and records its kept prefix (`prompt[..reuse]`).
    pub fn begin(&mut self, plan: &Plan, prompt: &[u32], key: &AdapterKey) {
        self.clock += 1;
        let s = &mut self.slots[plan.slot];
        s.busy = true;
        s.key = key.clone();
        s.tokens.clear();
        s.tokens.extend_from_slice(&prompt[..plan.reuse]);
        s.last_used = self.clock;
    }

    /// Records tokens appended to a slot's KV cache.
    pub fn push(&mut self, slot: usize, tokens: &[u32]) {
        self.slots[slot].tokens.extend_from_slice(tokens);
    }

    /// Forgets the slot's cache (after a failure its KV content is unknown).
    pub fn clear(&mut self, slot: usize) {
        self.slots[slot].tokens.clear();
    }

    /// Frees the slot, keeping its cache for later requests.
    pub fn release(&mut self, slot: usize) {
        self.clock += 1;
        let s = &mut self.slots[slot];
        s.busy = false;
        s.last_used = self.clock;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_longest_prefix_and_leaves_one_token() {
        let mut c = PrefixCache::new(2);
        let k = AdapterKey::base();
        let p1 = vec![1, 2, 3, 4, 5];
        let plan = c.plan(&p1, &k).unwrap();
        assert_eq!(plan.reuse, 0);
        c.begin(&plan, &p1, &k);
        c.push(plan.slot, &p1);
        c.push(plan.slot, &[9, 9]); // generated
        c.release(plan.slot);
        // Next chat turn extends the conversation.
        let p2 = vec![1, 2, 3, 4, 5, 9, 9, 7];
        let plan2 = c.plan(&p2, &k).unwrap();
        assert_eq!((plan2.slot, plan2.reuse), (plan.slot, 7));
        // The same prompt again: all but the last token reused.
        let plan3 = c.plan(&p1, &k).unwrap();
        assert_eq!((plan3.slot, plan3.reuse), (plan.slot, 4));
    }

    #[test]
    fn adapter_key_separates_caches() {
        let mut c = PrefixCache::new(2);
        let base = AdapterKey::base();
        let lora = AdapterKey::new([("a", 1.0)]);
        let p = vec![1, 2, 3, 4];
        let plan = c.plan(&p, &base).unwrap();
        c.begin(&plan, &p, &base);
        c.push(plan.slot, &p);
        c.release(plan.slot);
        assert_eq!(c.plan(&p, &lora).unwrap().reuse, 0);
        assert_eq!(c.plan(&p, &base).unwrap().reuse, 3);
        assert_eq!(AdapterKey::new([("a", 0.0)]), base);
    }

    #[test]
    fn busy_slot_lends_its_prefix() {
        let mut c = PrefixCache::new(2);
        let k = AdapterKey::base();
        let system: Vec<u32> = (0..100).collect();
        let mut p1 = system.clone();
        p1.push(1000);
        let plan = c.plan(&p1, &k).unwrap();
        c.begin(&plan, &p1, &k);
        c.push(plan.slot, &p1);
        let mut p2 = system.clone();
        p2.push(2000);
        let plan2 = c.plan(&p2, &k).unwrap();
        assert_ne!(plan2.slot, plan.slot);
        assert_eq!(plan2.copy_from, Some((plan.slot, 100)));
        assert_eq!(plan2.reuse, 100);
        c.begin(&plan2, &p2, &k);
        assert!(c.plan(&p2, &k).is_none());
    }

    #[test]
    fn lru_choice_when_no_prefix() {
        let mut c = PrefixCache::new(2);
        let k = AdapterKey::base();
        let a = vec![1, 2, 3];
        let plan = c.plan(&a, &k).unwrap();
        c.begin(&plan, &a, &k);
        c.push(plan.slot, &a);
        c.release(plan.slot);
        // An unrelated prompt goes to the other (older) slot, keeping `a` cached.
        let plan2 = c.plan(&[7, 8, 9], &k).unwrap();
        assert_ne!(plan2.slot, plan.slot);
    }
}
