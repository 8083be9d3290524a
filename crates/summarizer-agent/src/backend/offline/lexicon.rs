//! Word lists behind the offline heuristics. Kept apart from the logic so
//! tuning the vocabulary (for example, for another domain) touches one file.
//! All entries are lower case, compared against `text::words` output.

/// Words that make a sentence about the speaker.
#[rustfmt::skip]
pub(crate) const FIRST_PERSON: &[&str] = &[
    "i", "i'm", "im", "i've", "ive", "i'd", "i'll", "my", "me", "mine", "myself", "we", "we're",
    "our", "us",
];

/// Verbs that, after "I", introduce a stated fact ("I have", "I take").
#[rustfmt::skip]
pub(crate) const STATIVE_VERBS: &[&str] = &[
    "am", "have", "had", "take", "took", "use", "was", "got", "pay", "paid", "see", "saw", "live",
    "work", "switched", "moved", "need", "started", "stopped", "visited", "filed", "called", "get",
];

/// Vocabulary of the domain; each hit makes a sentence more likely worth remembering.
#[rustfmt::skip]
pub(crate) const DOMAIN_WORDS: &[&str] = &[
    "plan", "deductible", "copay", "copayment", "coinsurance", "premium", "claim", "claims",
    "member", "policy", "prescription", "prescriptions", "pharmacy", "provider", "doctor", "dr",
    "hospital", "network", "ppo", "hmo", "epo", "pos", "hsa", "fsa", "hra", "medicare", "medicaid",
    "formulary", "referral", "authorization", "preauthorization", "insurance", "insurer",
    "coverage", "covered", "specialist", "clinic", "surgery", "appointment", "diagnosis", "tier",
    "generic", "employer", "cobra", "dependent", "spouse", "enrollment", "eob", "bill", "billed",
    "mg", "dose", "refill", "denied", "pocket", "group", "subscriber",
];

#[rustfmt::skip]
pub(crate) const MONTHS: &[&str] = &[
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
];

/// Openings of requests and questions: the user asks rather than states.
#[rustfmt::skip]
pub(crate) const REQUEST_OPENINGS: &[&str] = &[
    "can you", "could you", "would you", "will you", "please", "how", "what", "why", "when",
    "where", "which", "who", "do you", "does", "is there", "are there", "should i", "help me",
    "i want to know", "i was wondering", "i wonder", "tell me",
];

/// Sentences that carry no content on their own.
#[rustfmt::skip]
pub(crate) const PLEASANTRIES: &[&str] = &[
    "thanks", "thank you", "ok", "okay", "great", "hi", "hello", "hey", "cool", "got it", "sure",
    "perfect", "awesome", "bye",
];

/// Markers of an assistant guessing rather than knowing.
#[rustfmt::skip]
pub(crate) const HEDGES: &[&str] = &[
    "it sounds like", "sounds like", "you probably", "probably", "likely", "i think", "may",
    "might", "i assume", "i'm assuming", "assuming", "seems", "it appears", "appears to",
    "i suspect", "i guess", "presumably", "perhaps", "possibly", "could be", "it looks like",
];

/// Openings of a reply that confirms what was just said. ("Right" and "true"
/// are left out: "Right now I have..." is not a confirmation.)
#[rustfmt::skip]
pub(crate) const AFFIRMATIONS: &[&str] = &[
    "yes", "yeah", "yep", "yup", "correct", "exactly", "indeed", "absolutely", "that's right",
    "that is right", "that's correct", "that is correct", "you're right", "you are right",
    "that's true", "sure is",
];

/// Openings of a reply that rejects what was just said.
#[rustfmt::skip]
pub(crate) const DENIALS: &[&str] = &[
    "no", "nope", "nah", "incorrect", "wrong", "that's wrong", "that's not right",
    "that is not right", "that's not correct", "not quite", "not really", "actually no",
];

/// Openings that start with a denial word without denying anything.
#[rustfmt::skip]
pub(crate) const NOT_DENIALS: &[&str] = &["no one", "no problem", "no worries", "no idea", "no longer"];

/// Past-tense verbs that, after "I" or "we", report something that happened.
#[rustfmt::skip]
pub(crate) const EVENT_VERBS: &[&str] = &[
    "went", "made", "bought", "joined", "started", "finished", "painted", "read", "wrote",
    "adopted", "signed", "tried", "learned", "ran", "won", "lost", "met", "visited", "saw",
    "received", "applied", "enrolled", "decided", "planned", "booked", "traveled", "travelled",
    "moved", "graduated", "married", "attended", "volunteered", "created", "built", "gave",
    "found", "took", "got", "did", "love", "like", "enjoy", "want", "plan",
];

/// Words that place a statement in time.
#[rustfmt::skip]
pub(crate) const TIME_WORDS: &[&str] = &[
    "yesterday", "today", "tomorrow", "tonight", "week", "weekend", "month", "year", "ago",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "since",
];

/// Interjections and openers worth nothing on their own.
#[rustfmt::skip]
pub(crate) const FILLERS: &[&str] = &[
    "wow", "oh", "ooh", "yeah", "hey", "hi", "hello", "hmm", "well", "haha", "lol", "omg", "aw",
    "aww", "ah", "ahh", "cool", "great", "awesome", "nice", "thanks", "gosh", "whoa", "yay",
    "so", "totally", "definitely", "honestly", "sure", "ok", "okay",
];

/// Words that carry grammar, not content; a sentence's content is the rest.
#[rustfmt::skip]
pub(crate) const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "by",
    "from", "as", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "has",
    "have", "had", "it", "its", "it's", "this", "that", "these", "those", "there", "i", "me",
    "my", "you", "your", "we", "our", "they", "them", "he", "she", "so", "just", "really",
    "very", "too", "also", "what", "how", "i'm", "you're", "that's", "not", "can", "will",
    "would", "could", "all", "about", "like", "some", "such", "much", "lot", "things", "thing",
    "up", "out", "if", "when", "get", "got",
];
