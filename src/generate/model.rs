//! The people, products and value pools of the synthetic CDP, derived
//! deterministically from `(seed, index)` so any person can be rebuilt on
//! demand without keeping them all in memory.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Days simulated: one year of activity.
pub const DAYS: u32 = 365;
/// First simulated day, as days since 1970-01-01 (2025-07-01).
pub const START_DAY: i32 = 20_270;
/// Microseconds in a day.
pub const DAY_MICROS: i64 = 86_400_000_000;

pub const FIRST_NAMES: &[&str] = &[
    "Jane", "John", "Camille", "Louis", "Emma", "Hugo", "Léa", "Lucas", "Chloé", "Gabriel",
    "Manon", "Arthur", "Inès", "Jules", "Sarah", "Adam", "Zoé", "Nathan", "Alice", "Paul",
    "Olivia", "Noah", "Mia", "Ethan", "Sofia", "Liam", "Anna", "Tom", "Eva", "Leo",
];
pub const LAST_NAMES: &[&str] = &[
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David", "Bertrand", "Roux",
    "Smith", "Johnson", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Müller", "Schmidt",
    "Rossi", "Bianchi", "Lopez",
];
pub const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.fr",
    "orange.fr",
    "hotmail.com",
    "outlook.com",
    "free.fr",
    "icloud.com",
    "example.com",
];
pub const CITIES: &[(&str, &str, &str)] = &[
    ("Paris", "75011", "FR"),
    ("Lyon", "69002", "FR"),
    ("Marseille", "13001", "FR"),
    ("Lille", "59000", "FR"),
    ("Bordeaux", "33000", "FR"),
    ("Nantes", "44000", "FR"),
    ("Toulouse", "31000", "FR"),
    ("Strasbourg", "67000", "FR"),
    ("Bruxelles", "1000", "BE"),
    ("Genève", "1201", "CH"),
];
pub const STREETS: &[&str] = &[
    "rue de la Paix",
    "avenue Victor Hugo",
    "boulevard Voltaire",
    "rue du Moulin",
    "place de la République",
    "rue des Lilas",
    "chemin des Vignes",
    "rue Pasteur",
];
pub const CATEGORIES: &[(&str, i64, i64)] = &[
    // name, min price (cents), max price (cents)
    ("apparel", 1_500, 12_000),
    ("shoes", 3_000, 18_000),
    ("accessories", 800, 9_000),
    ("beauty", 600, 6_000),
    ("home", 1_000, 25_000),
    ("electronics", 2_000, 90_000),
    ("sports", 1_200, 30_000),
    ("kids", 700, 8_000),
];
pub const SEASONS: &[&str] = &["SS25", "AW25", "SS26", "AW26", "evergreen"];
pub const ADJECTIVES: &[&str] = &[
    "Classic",
    "Essential",
    "Urban",
    "Eco",
    "Premium",
    "Light",
    "Cosy",
    "Pro",
    "Mini",
    "Vintage",
];
pub const PAGES: &[(&str, &str)] = &[
    ("Home", "/"),
    ("Category", "/c/"),
    ("Product", "/p/"),
    ("Search", "/search"),
    ("Cart", "/cart"),
    ("Account", "/account"),
    ("Help", "/help"),
    ("Stores", "/stores"),
];
pub const LOYALTY_TIERS: &[&str] = &["bronze", "silver", "gold", "platinum"];
pub const PURPOSES: &[&str] = &["email_marketing", "sms_marketing", "ads", "analytics"];
/// Identifier values real exports are full of, which must never link people.
pub const JUNK_EMAILS: &[&str] = &[
    "test@test.com",
    "null",
    "",
    "  ",
    "undefined",
    "none@none.com",
];
pub const JUNK_PHONES: &[&str] = &["0", "", "null", "0000000000", "undefined"];

pub const PROMOTER_COMMENTS: &[&str] = &[
    "Great service, fast delivery",
    "Love the products",
    "Staff in store were very helpful",
    "Will buy again",
];
pub const PASSIVE_COMMENTS: &[&str] = &["Fine", "Delivery could be faster", "Good but pricey"];
pub const DETRACTOR_COMMENTS: &[&str] = &[
    "Parcel arrived late",
    "Item was damaged",
    "Refund took weeks",
    "Website kept crashing at checkout",
    "Rude staff",
];

/// A random generator for one `(seed, stream, index)`, independent of all
/// others so results do not depend on processing order.
pub fn rng_for(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    let mut z = seed
        ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// A device the person browses with: a cookie (`anonymous_id`) and its kind.
#[derive(Debug, Clone)]
pub struct Device {
    pub anonymous_id: String,
    pub app: bool,
}

/// One simulated person. Known people have a CRM record; anonymous visitors
/// only ever have cookies.
#[derive(Debug, Clone)]
pub struct Person {
    pub index: u64,
    pub known: bool,
    pub customer_id: String,
    /// Website/app login; `None` for store-only customers.
    pub user_id: Option<String>,
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub email: String,
    /// National significant number (9 digits, French mobile).
    pub phone_digits: String,
    pub city: (&'static str, &'static str, &'static str),
    pub street: String,
    pub birth_days: i32,
    pub devices: Vec<Device>,
    /// Day (0-based) the person first appears.
    pub first_day: u32,
    /// Day after which the person is no longer active (churn).
    pub last_day: u32,
    /// Mean days between visits.
    pub mean_gap: f64,
    /// Chance a visit ends with an order.
    pub buy_rate: f64,
    /// Chance that a given day of activity is a store visit instead.
    pub store_rate: f64,
    /// This person's CRM rows carry a junk email or phone.
    pub junk_identifiers: bool,
    /// Logs in under a second, older cookie that later gets an alias call.
    pub aliased: bool,
}

impl Person {
    /// Rebuild person `index` of a population with `known` known people.
    pub fn derive(seed: u64, index: u64, known: u64) -> Person {
        let mut rng = rng_for(seed, 1, index);
        let is_known = index < known;
        let first_name = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
        let last_name = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
        let domain = DOMAINS[rng.random_range(0..DOMAINS.len())];
        let email = format!(
            "{}.{}{}@{}",
            ascii_lower(first_name),
            ascii_lower(last_name),
            index,
            domain
        );
        let phone_digits = format!("6{:08}", (index * 7_919 + 13) % 100_000_000);
        let device_count = if is_known {
            1 + rng.random_range(0..3) + usize::from(rng.random_bool(0.15))
        } else {
            1
        };
        let devices = (0..device_count)
            .map(|_| Device {
                anonymous_id: uuid_like(&mut rng),
                app: rng.random_bool(0.3),
            })
            .collect();
        let existing = is_known && rng.random_bool(0.4);
        let first_day = if existing {
            0
        } else {
            rng.random_range(0..DAYS)
        };
        let churn = rng.random_bool(if is_known { 0.25 } else { 0.6 });
        let last_day = if churn {
            rng.random_range(first_day..DAYS)
        } else {
            DAYS
        };
        // Log-uniform gap between visits: from heavy users to rare ones.
        let mean_gap = if is_known {
            (rng.random_range(1.5f64..4.5)).exp()
        } else {
            rng.random_range(5.0..60.0)
        };
        Person {
            index,
            known: is_known,
            customer_id: format!("C{index:07}"),
            user_id: (is_known && rng.random_bool(0.8))
                .then(|| format!("u{:08x}", index * 2_654_435_761 % 4_294_967_291)),
            first_name,
            last_name,
            email,
            phone_digits,
            city: CITIES[rng.random_range(0..CITIES.len())],
            street: format!(
                "{} {}",
                rng.random_range(1..150),
                STREETS[rng.random_range(0..STREETS.len())]
            ),
            birth_days: rng.random_range(-18_000..9_000),
            devices,
            first_day,
            last_day,
            mean_gap,
            buy_rate: if is_known {
                rng.random_range(0.05..0.35)
            } else {
                0.0
            },
            store_rate: if is_known {
                rng.random_range(0.0..0.4)
            } else {
                0.0
            },
            junk_identifiers: rng.random_bool(0.02),
            aliased: is_known && rng.random_bool(0.1),
        }
    }

    /// The email as a given source happens to write it (case, spaces).
    pub fn email_variant(&self, rng: &mut impl Rng) -> String {
        match rng.random_range(0..10) {
            0 => self.email.to_uppercase(),
            1 => format!("  {} ", self.email),
            2 => capitalise(&self.email),
            _ => self.email.clone(),
        }
    }

    /// The phone as a given source writes it: `+33`, `0`, dots, spaces.
    pub fn phone_variant(&self, rng: &mut impl Rng) -> String {
        let d = &self.phone_digits;
        match rng.random_range(0..5) {
            0 => format!("+33{d}"),
            1 => format!("0{d}"),
            2 => format!(
                "+33 {} {} {} {} {}",
                &d[0..1],
                &d[1..3],
                &d[3..5],
                &d[5..7],
                &d[7..9]
            ),
            3 => format!(
                "0{}.{}.{}.{}.{}",
                &d[0..1],
                &d[1..3],
                &d[3..5],
                &d[5..7],
                &d[7..9]
            ),
            _ => format!("0033{d}"),
        }
    }
}

/// One product of the catalogue.
#[derive(Debug, Clone)]
pub struct Product {
    pub product_id: String,
    pub name: String,
    pub category: &'static str,
    pub price_cents: i64,
    pub stock: i64,
    pub season: &'static str,
    pub active: bool,
}

impl Product {
    pub fn derive(seed: u64, index: u64) -> Product {
        let mut rng = rng_for(seed, 2, index);
        let (category, low, high) = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
        // Prices cluster low: square a uniform draw, round to .90/.99 endings.
        let u: f64 = rng.random();
        let raw = low + ((high - low) as f64 * u * u) as i64;
        let price_cents = (raw / 100) * 100 + if rng.random_bool(0.5) { 90 } else { 99 };
        Product {
            product_id: format!("P{index:05}"),
            name: format!(
                "{} {} {}",
                ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
                category,
                index
            ),
            category,
            price_cents,
            stock: if rng.random_bool(0.08) {
                0
            } else {
                rng.random_range(1..500)
            },
            season: SEASONS[rng.random_range(0..SEASONS.len())],
            active: rng.random_bool(0.95),
        }
    }
}

fn ascii_lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'é' | 'è' => 'e',
            'ï' => 'i',
            'ü' => 'u',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A cookie id shaped like the UUIDs analytics.js generates.
pub fn uuid_like(rng: &mut impl Rng) -> String {
    let bytes: [u8; 16] = rng.random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}
