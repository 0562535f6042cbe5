//! Follow-up messages that carry no topic of their own ("could you go into more detail?").
//!
//! In a conversation the last user message often only points back ("why?", "give me an
//! example"). Classified alone, such a message gets a confident but meaningless category. The
//! category head therefore learns one extra label, [`NO_TOPIC`], from these generated messages;
//! at serving time the probability of that label is how much the earlier turns decide the
//! category (`classifier_svc::category_head::mix_with_context`).

use crate::text::hash_str;

/// The category head's extra label for messages without a topic of their own.
pub use classifier_svc::category_head::NO_TOPIC;

const OPENERS: &[&str] = &["", "ok ", "okay, ", "hmm ", "thanks! ", "great, ", "wait, ", "sorry, ", "cool. ", "right, ", "and ", "so ", "got it. ", "interesting. "];

const CORES: &[&str] = &[
    "could you go into more detail on that",
    "can you explain that again",
    "why is that",
    "why",
    "how so",
    "give me an example",
    "can you give another example",
    "what do you mean",
    "what do you mean by that",
    "can you make it shorter",
    "make it simpler please",
    "explain it like I'm five",
    "tell me more",
    "go on",
    "continue",
    "keep going",
    "and how does that compare",
    "how does that compare to the other one",
    "what about the second one",
    "what about the first point",
    "is that always true",
    "are there exceptions",
    "what are the downsides",
    "what are the pros and cons",
    "which one would you recommend",
    "can you summarise that",
    "sum that up in one sentence",
    "put that in a table",
    "can you rewrite that as bullet points",
    "I don't get it",
    "not sure I follow",
    "could you clarify the last part",
    "what's the source for that",
    "are you sure about that",
    "that doesn't sound right",
    "is there anything else I should know",
    "what should I do next",
    "how would I apply that",
    "can you show me step by step",
    "what would happen otherwise",
    "and in practice",
    "why does that matter",
    "can you elaborate",
    "expand on the third point",
    "what's a good way to remember this",
    "any common mistakes to avoid",
    "how long would that take",
    "could you double check that",
    "say that again but more formally",
    "now translate that into plain English",
];

const CLOSERS: &[&str] = &["?", "", "?", ".", "??", " please", " pls", "? thanks"];

/// Every opener × core combination once, with a closer and a casing picked by a hash of the
/// pair (stable across runs); `limit` caps the count, keeping a spread of cores.
pub fn generate(limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    for round in 0..OPENERS.len() {
        for (c, core) in CORES.iter().enumerate() {
            let opener = OPENERS[(c + round) % OPENERS.len()];
            let h = hash_str(&format!("{opener}{core}"));
            let closer = CLOSERS[(h % CLOSERS.len() as u64) as usize];
            let mut s = format!("{opener}{core}{closer}");
            if h % 3 == 0 {
                let mut ch = s.chars();
                s = ch.next().map(|f| f.to_uppercase().collect::<String>() + ch.as_str()).unwrap_or_default();
            }
            out.push(s);
            if out.len() >= limit {
                return out;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_ups_are_distinct_and_capped() {
        let all = generate(usize::MAX);
        assert_eq!(all.len(), OPENERS.len() * CORES.len());
        let mut uniq = all.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), all.len());
        assert_eq!(generate(100).len(), 100);
    }
}
