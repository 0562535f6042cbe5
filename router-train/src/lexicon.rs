//! Term questions from WordNet's topic domains (Debian's `wordnet-base`).
//!
//! WordNet links many noun synsets to a topic domain (the `;c` pointer: "tort" → law,
//! "integral" → calculus → mathematics). Each term of a domain we map onto a category becomes
//! one short question in a chat register ("what is a tort", "explain eigenvalue to me"), which
//! teaches the category head the vocabulary of each field beyond the exam questions it was
//! trained on. The glosses are not used: people ask about terms, they do not paste definitions.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};

use crate::text::{hash_str, Rng};

/// WordNet topic domain (the domain synset's first lemma) → category. Domains not listed are
/// skipped: too broad or not one category (e.g. `military`, `terrorism`, `linguistics`).
pub const DOMAINS: &[(&str, &str)] = &[
    ("law", "law"),
    ("criminal_law", "law"),
    ("contract", "law"),
    ("civil_law", "law"),
    ("computer_science", "computer science"),
    ("computer", "computer science"),
    ("programming", "computer science"),
    ("telecommunication", "computer science"),
    ("physics", "physics"),
    ("astronomy", "physics"),
    ("cosmology", "physics"),
    ("particle_physics", "physics"),
    ("nuclear_physics", "physics"),
    ("optics", "physics"),
    ("electricity", "physics"),
    ("mathematics", "math"),
    ("statistics", "math"),
    ("geometry", "math"),
    ("algebra", "math"),
    ("calculus", "math"),
    ("biology", "biology"),
    ("genetics", "biology"),
    ("botany", "biology"),
    ("zoology", "biology"),
    ("ecology", "biology"),
    ("microbiology", "biology"),
    ("embryology", "biology"),
    ("cytology", "biology"),
    ("chemistry", "chemistry"),
    ("physical_chemistry", "chemistry"),
    ("organic_chemistry", "chemistry"),
    ("biochemistry", "chemistry"),
    ("medicine", "health"),
    ("anatomy", "health"),
    ("pathology", "health"),
    ("physiology", "health"),
    ("surgery", "health"),
    ("obstetrics", "health"),
    ("dentistry", "health"),
    ("ophthalmology", "health"),
    ("immunology", "health"),
    ("pharmacology", "health"),
    ("pregnancy", "health"),
    ("psychology", "psychology"),
    ("psychoanalysis", "psychology"),
    ("psychiatry", "psychology"),
    ("psychophysics", "psychology"),
    ("philosophy", "philosophy"),
    ("logic", "philosophy"),
    ("religion", "philosophy"),
    ("theology", "philosophy"),
    ("Christianity", "philosophy"),
    ("Judaism", "philosophy"),
    ("Islam", "philosophy"),
    ("Hinduism", "philosophy"),
    ("Buddhism", "philosophy"),
    ("Sikhism", "philosophy"),
    ("ethics", "philosophy"),
    ("economics", "economics"),
    ("finance", "economics"),
    ("stock_exchange", "economics"),
    ("commercial_enterprise", "business"),
    ("corporation", "business"),
    ("accounting", "business"),
    ("business", "business"),
    ("electronics", "engineering"),
    ("architecture", "engineering"),
    ("aircraft", "engineering"),
    ("engineering", "engineering"),
    ("mechanical_engineering", "engineering"),
    ("antiquity", "history"),
    ("Middle_Ages", "history"),
    ("history", "history"),
    ("archeology", "history"),
    ("sport", "other"),
    ("baseball", "other"),
    ("golf", "other"),
    ("football", "other"),
    ("American_football", "other"),
    ("tennis", "other"),
    ("soccer", "other"),
    ("basketball", "other"),
    ("ice_hockey", "other"),
    ("cricket", "other"),
    ("rugby", "other"),
    ("boxing", "other"),
    ("music", "other"),
    ("cooking", "other"),
    ("chess", "other"),
    ("card_game", "other"),
    ("poker", "other"),
    ("bridge", "other"),
    ("photography", "other"),
    ("ballet", "other"),
    ("television", "other"),
    ("car", "other"),
    ("furniture", "other"),
    ("fishing", "other"),
    ("sailing", "other"),
];

/// One term of a topic domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub term: String,
    pub domain: String,
    pub category: String,
}

/// Reads WordNet's `data.noun` and returns the terms of every mapped domain (first lemma of
/// each synset that points to the domain, underscores as spaces), in file order.
pub fn domain_terms(data_noun: &str) -> Result<Vec<Term>> {
    let map: HashMap<&str, &str> = DOMAINS.iter().copied().collect();
    let mut first_lemma: HashMap<&str, &str> = HashMap::new();
    let mut links: Vec<(&str, &str)> = Vec::new(); // (synset lemma, domain offset)
    for (n, line) in data_noun.lines().enumerate() {
        if line.starts_with("  ") || line.trim().is_empty() {
            continue; // licence header
        }
        let head = line.split(" | ").next().unwrap_or(line);
        let t: Vec<&str> = head.split_whitespace().collect();
        let parse = || -> Option<(&str, &str, Vec<(&str, &str)>)> {
            let offset = *t.first()?;
            let words = usize::from_str_radix(t.get(3)?, 16).ok()?;
            let lemma = *t.get(4)?;
            let mut i = 4 + 2 * words;
            let pointers: usize = t.get(i)?.parse().ok()?;
            i += 1;
            let mut out = Vec::new();
            for _ in 0..pointers {
                if *t.get(i)? == ";c" {
                    out.push((lemma, *t.get(i + 1)?));
                }
                i += 4;
            }
            Some((offset, lemma, out))
        };
        let (offset, lemma, out) = parse().with_context(|| format!("data.noun line {}: cannot parse", n + 1))?;
        first_lemma.insert(offset, lemma);
        links.extend(out);
    }
    let mut terms = Vec::new();
    for (lemma, domain_offset) in links {
        let Some(domain) = first_lemma.get(domain_offset) else { continue };
        let Some(category) = map.get(domain) else { continue };
        let term = lemma.replace('_', " ");
        // Drop WordNet's markers (`(a)`, `(p)`) and terms that are mostly not words.
        let term = term.split('(').next().unwrap_or("").trim().to_string();
        if term.len() < 3 || !term.chars().any(|c| c.is_alphabetic()) {
            continue;
        }
        terms.push(Term { term, domain: domain.to_string(), category: category.to_string() });
    }
    Ok(terms)
}

/// Chat-register question templates for a term (`{}` is the term).
const TEMPLATES: &[&str] = &[
    "what is {}?",
    "what's {}",
    "can you explain {} to me?",
    "explain {} in simple terms",
    "what does {} mean?",
    "I keep hearing about {}. what is it exactly?",
    "quick question: what's {} and why does it matter?",
    "how would you describe {} to a beginner?",
    "eli5 {}",
    "tell me about {}",
    "give me a short overview of {}",
    "whats the deal with {}",
    "I'm reading about {} and I'm lost, can you help?",
    "define {} and give an example",
    "how does {} work?",
];

/// One question per term, template chosen by a hash of the term (stable across runs), with at
/// most `per_category` terms per category (taken in a stable pseudo-random order) so that large
/// domains (law has hundreds of terms) do not drown the others.
pub fn questions(terms: &[Term], per_category: usize) -> Vec<(String, Term)> {
    let mut by_cat: BTreeMap<&str, Vec<&Term>> = BTreeMap::new();
    for t in terms {
        by_cat.entry(t.category.as_str()).or_default().push(t);
    }
    let mut out = Vec::new();
    for (_, mut ts) in by_cat {
        ts.sort_by_key(|t| hash_str(&format!("lexicon:{}", t.term)));
        ts.dedup_by(|a, b| a.term.eq_ignore_ascii_case(&b.term));
        for t in ts.into_iter().take(per_category) {
            let mut rng = Rng::new(hash_str(&t.term));
            let tpl = TEMPLATES[rng.below(TEMPLATES.len())];
            out.push((tpl.replace("{}", &t.term), t.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three synsets in `data.noun` format: `law` (the domain), `tort` (→ law) and `integral`
    /// (→ an unmapped domain `nonsense`).
    const SAMPLE: &str = "  1 This software and database is being provided ...\n\
00000001 04 n 01 law 0 000 | the collection of rules\n\
00000002 04 n 01 tort 0 001 ;c 00000001 n 0000 | a wrongdoing\n\
00000003 04 n 01 nonsense 0 000 | no domain of ours\n\
00000004 04 n 02 integral 0 definite_integral 0 001 ;c 00000003 n 0000 | a sum\n";

    #[test]
    fn terms_follow_domain_pointers_and_skip_unmapped_domains() {
        let terms = domain_terms(SAMPLE).unwrap();
        assert_eq!(terms, vec![Term { term: "tort".into(), domain: "law".into(), category: "law".into() }]);
        let q = questions(&terms, 10);
        assert_eq!(q.len(), 1);
        assert!(q[0].0.contains("tort") && !q[0].0.contains("{}"), "{}", q[0].0);
    }
}
