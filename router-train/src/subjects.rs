//! The reviewed mapping of the 57 MMLU subjects onto the 14 MMLU-Pro categories
//! (`mmlu_subjects.csv` beside `Cargo.toml`).

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// The 14 MMLU-Pro categories, in label order (the category head's class indices).
pub const CATEGORIES: [&str; 14] = [
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
];

pub const TABLE: &str = include_str!("../mmlu_subjects.csv");

/// Subject (as spelled in the data, e.g. `high school physics`) → category.
pub fn mapping() -> Result<BTreeMap<String, String>> {
    parse(TABLE)
}

pub fn parse(table: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (n, line) in table.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((subject, category)) = line.split_once(',') else {
            bail!("mmlu_subjects.csv line {}: expected `subject,category`", n + 1);
        };
        let (subject, category) = (canonical(subject), category.trim().to_string());
        if !CATEGORIES.contains(&category.as_str()) {
            bail!("mmlu_subjects.csv line {}: unknown category `{category}`", n + 1);
        }
        if map.insert(subject.clone(), category).is_some() {
            bail!("mmlu_subjects.csv line {}: subject `{subject}` listed twice", n + 1);
        }
    }
    Ok(map)
}

/// `high_school_physics`, `High School Physics` → `high school physics`.
pub fn canonical(subject: &str) -> String {
    subject.trim().replace('_', " ").to_lowercase()
}

pub fn category_index(category: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| *c == category)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 57 MMLU subjects (Hendrycks et al.), as in the test set's file names.
    const MMLU_SUBJECTS: [&str; 57] = [
        "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
        "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
        "college_medicine", "college_physics", "computer_security", "conceptual_physics",
        "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
        "global_facts", "high_school_biology", "high_school_chemistry",
        "high_school_computer_science", "high_school_european_history", "high_school_geography",
        "high_school_government_and_politics", "high_school_macroeconomics",
        "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
        "high_school_psychology", "high_school_statistics", "high_school_us_history",
        "high_school_world_history", "human_aging", "human_sexuality", "international_law",
        "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
        "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
        "philosophy", "prehistory", "professional_accounting", "professional_law",
        "professional_medicine", "professional_psychology", "public_relations",
        "security_studies", "sociology", "us_foreign_policy", "virology", "world_religions",
    ];

    #[test]
    fn every_subject_maps_to_a_category_and_every_category_is_used() {
        let map = mapping().unwrap();
        assert_eq!(map.len(), 57);
        for s in MMLU_SUBJECTS {
            let c = map.get(&canonical(s)).unwrap_or_else(|| panic!("{s} is not mapped"));
            assert!(category_index(c).is_some());
        }
        for c in CATEGORIES {
            assert!(map.values().any(|v| v == c), "no subject maps to {c}");
        }
    }

    #[test]
    fn spot_checks() {
        let map = mapping().unwrap();
        for (s, c) in [
            ("high_school_physics", "physics"),
            ("professional_law", "law"),
            ("machine_learning", "computer science"),
            ("electrical_engineering", "engineering"),
            ("clinical_knowledge", "health"),
            ("moral_scenarios", "philosophy"),
            ("high_school_macroeconomics", "economics"),
            ("prehistory", "history"),
            ("marketing", "business"),
            ("high_school_statistics", "math"),
            ("miscellaneous", "other"),
        ] {
            assert_eq!(map[&canonical(s)], c, "{s}");
        }
    }

    #[test]
    fn rejects_unknown_categories_and_duplicates() {
        assert!(parse("subject,category\nanatomy,medicine\n").is_err());
        assert!(parse("subject,category\nanatomy,health\nanatomy,health\n").is_err());
    }
}
