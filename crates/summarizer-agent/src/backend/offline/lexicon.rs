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
