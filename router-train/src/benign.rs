//! Generated benign prompts: hard negatives for the jailbreak head.
//!
//! The packages the data comes from ship few benign prompts that look like real assistant
//! traffic, so this set is generated from templates × fillers. It is weighted towards what a
//! jailbreak detector tends to confuse with attacks: benign role-play and personas, defensive
//! security questions, dark-but-ordinary fiction, instructions that address the assistant's
//! behaviour, translation / summarisation requests and long pasted texts. Each template is its
//! own family (`benign_template/<n>`), so the split holds out whole templates.

pub struct Generated {
    pub text: String,
    pub family: String,
}

const TEMPLATES: &[(&str, &[&str])] = &[
    // Role-play and personas.
    ("You are a friendly pirate captain. Stay in character and tell me about {}.", &["your favourite island", "the best way to read a treasure map", "life on a ship", "the weather at sea", "your crew"]),
    ("Pretend you are my Spanish tutor. Correct my sentences and explain {}.", &["the subjunctive mood", "when to use ser and estar", "the preterite tense", "direct object pronouns"]),
    ("Act as a senior software engineer doing a code review. Be strict but kind. Review this code: {}", &["def add(a, b): return a+b", "for i in range(len(xs)): print(xs[i])", "SELECT * FROM users WHERE id = 1", "let x = vec.iter().map(|v| v * 2).collect::<Vec<_>>();"]),
    ("Let's play a game: you are a medieval innkeeper and I am a traveller. I walk in and ask about {}.", &["a room for the night", "rumours of a dragon", "the road to the capital", "your famous stew"]),
    ("Roleplay as a job interviewer for a {} position and ask me one question at a time.", &["data analyst", "nurse", "product manager", "backend developer", "teacher"]),
    ("From now on, answer as if you were Sherlock Holmes explaining {}.", &["how you deduced my profession", "the importance of observation", "why you play the violin"]),
    ("You are a customer support agent for an internet provider. I am a customer: {}", &["my router keeps dropping the connection", "I was billed twice this month", "how do I change my wifi password?"]),
    ("Imagine you are a tour guide in {}. Describe a one-day walking tour.", &["Rome", "Kyoto", "Lisbon", "Mexico City", "Edinburgh"]),
    // Security, asked defensively or for learning.
    ("How can I protect my web application against {}?", &["SQL injection", "cross-site scripting", "CSRF attacks", "brute-force login attempts", "session hijacking"]),
    ("Explain how {} works so I can defend my company's network against it.", &["phishing", "ransomware", "a man-in-the-middle attack", "credential stuffing", "a DDoS attack"]),
    ("What are the best practices for {}?", &["storing passwords in a database", "managing API keys in a CI pipeline", "securing an SSH server", "configuring a firewall on Linux", "rotating TLS certificates"]),
    ("I'm studying for the Security+ exam. Can you explain {}?", &["the difference between symmetric and asymmetric encryption", "what a zero-day vulnerability is", "how multi-factor authentication helps", "the principle of least privilege"]),
    ("My antivirus flagged {}. What should I do?", &["a file in my downloads folder", "a browser extension", "an email attachment from my bank"]),
    ("How do prompt injection attacks against LLM applications work, and how do I {}?", &["detect them", "mitigate them in a RAG pipeline", "test my chatbot for them"]),
    // Fiction with conflict, villains, crime — ordinary creative writing.
    ("Write a short story about {}.", &["a detective solving a museum theft", "a dragon who is afraid of fire", "a robot learning to paint", "two rival chefs at a village fair", "a lighthouse keeper during a storm", "a spy who forgets her mission"]),
    ("Write a poem about {}.", &["autumn leaves", "the ocean at night", "a lost friendship", "the city waking up", "grief and hope"]),
    ("Help me write the villain's monologue for my fantasy novel: the villain is {}.", &["a fallen king", "a sorcerer who wants to stop time", "a general betrayed by his empire"]),
    ("Write a murder mystery opening scene set in {}.", &["a snowed-in hotel", "a 1920s ocean liner", "a small fishing village"]),
    ("Continue this story: {}", &["The last train left the station without her.", "Nobody in the village had opened the old door for a hundred years.", "The message arrived exactly at midnight."]),
    // Instructions about the assistant's behaviour, benign.
    ("Ignore the typos in my message and {}", &["summarize the main points", "tell me if the argument makes sense", "rewrite it more clearly"]),
    ("For the rest of this conversation, please {}.", &["answer in bullet points", "keep your answers under 50 words", "reply in French", "explain things like I'm five", "use British spelling"]),
    ("You are a helpful assistant. Answer concisely: {}", &["what is the boiling point of water?", "how many continents are there?", "who wrote Pride and Prejudice?", "what does HTTP stand for?"]),
    ("Forget what I said earlier about {}; let's talk about {} instead.", &["the trip to Paris|my budget for the month", "the essay|my presentation slides", "dinner plans|the weekend hike"]),
    ("Pretend this is a job interview and give me feedback on my answer: {}", &["I am a perfectionist and I work too hard.", "I left my last job because I wanted to grow.", "My greatest strength is communication."]),
    // Translation, summarisation, editing.
    ("Translate the following text into {}: {}", &["German|Where is the train station?", "Spanish|The meeting has been moved to Thursday.", "Japanese|Thank you for your help yesterday.", "Italian|I would like to book a table for two."]),
    ("Summarize this paragraph in two sentences: {}", &["The city council met on Tuesday to discuss the new bike lanes. Residents were divided: some welcomed safer commuting, others worried about parking. The council will vote next month after a public survey.", "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make glucose and oxygen. It takes place mainly in the leaves, inside chloroplasts."]),
    ("Proofread this email and make it more professional: {}", &["hey, can u send me the report by tmrw? thx", "hi boss, i'm sick today so i won't come in, sorry", "we need the invoice paid asap or we stop the service"]),
    // Everyday tasks.
    ("Give me a {} recipe that is ready in 30 minutes.", &["vegetarian pasta", "chicken curry", "lentil soup", "vegan stir-fry"]),
    ("Plan a {}-day itinerary for a trip to {}.", &["3|Barcelona", "5|Iceland", "2|New York", "4|Vietnam"]),
    ("Write a Python function that {}.", &["checks whether a string is a palindrome", "merges two sorted lists", "parses a CSV file and sums a column", "retries an HTTP request with exponential backoff"]),
    ("How do I {} in {}?", &["read a file line by line|Rust", "make an HTTP request|JavaScript", "sort a dictionary by value|Python", "create a virtual environment|Python"]),
    ("What's a good way to {}?", &["learn to play the guitar as an adult", "stay focused while working from home", "prepare for a marathon", "start journaling", "save money on groceries"]),
    ("Can you recommend {}?", &["a few science fiction books", "a board game for four players", "a podcast about history", "stretching exercises for back pain"]),
    ("I feel {} today. Any advice?", &["stressed about exams", "lonely after moving to a new city", "unmotivated at work", "anxious before my presentation"]),
    ("Write a birthday message for {}.", &["my grandmother who is turning 90", "a coworker I don't know well", "my best friend"]),
    ("Explain {} to a beginner.", &["how compound interest works", "what machine learning is", "how vaccines train the immune system", "how a bill becomes a law"]),
];

/// All generated prompts, in a fixed order.
pub fn generate() -> Vec<Generated> {
    let mut out = Vec::new();
    for (n, (template, fillers)) in TEMPLATES.iter().enumerate() {
        for filler in fillers.iter() {
            let mut text = template.to_string();
            for part in filler.split('|') {
                text = text.replacen("{}", part, 1);
            }
            out.push(Generated { text, family: format!("benign_template/{n}") });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_are_fully_filled() {
        let g = super::generate();
        assert!(g.len() > 100);
        assert!(g.iter().all(|p| !p.text.contains("{}")), "unfilled slot");
    }
}
