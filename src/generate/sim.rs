//! The day-by-day simulation: who visits on which day and what each visit
//! leaves behind in every source (web/app events, CRM rows, orders, survey
//! answers, consent records).
//!
//! Memory is bounded by the number of people (a 4-byte schedule entry
//! each), never by the number of rows: a day's rows are handed over as
//! batches and forgotten. Each day has its own random stream, so the output
//! depends only on `(scale, seed)`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::model::*;
use crate::schema::RawTable;
use crate::schema::rows::TableRows;

/// Sizes of a generated population.
#[derive(Debug, Clone, Copy)]
pub struct Population {
    pub known: u64,
    pub anonymous: u64,
    pub products: u64,
}

impl Population {
    pub fn for_scale(scale: u32) -> Population {
        let scale = u64::from(scale.max(1));
        Population {
            known: scale * 1_000,
            anonymous: scale * 300,
            products: (200 + 10 * scale).min(20_000),
        }
    }

    pub fn people(&self) -> u64 {
        self.known + self.anonymous
    }
}

/// The rows of every raw table for one day.
pub struct DayRows {
    pub tables: Vec<TableRows>,
}

impl DayRows {
    fn new() -> DayRows {
        DayRows {
            tables: RawTable::ALL.into_iter().map(TableRows::new).collect(),
        }
    }

    fn get(&mut self, table: RawTable) -> &mut TableRows {
        let index = RawTable::ALL
            .iter()
            .position(|t| *t == table)
            .unwrap_or_default();
        &mut self.tables[index]
    }
}

/// The simulation state: the visit schedule and the seed.
pub struct Simulation {
    seed: u64,
    population: Population,
    schedule: Vec<Vec<u32>>,
    next_day: u32,
    product_prices: Vec<(String, i64)>,
}

impl Simulation {
    pub fn new(scale: u32, seed: u64) -> Simulation {
        let population = Population::for_scale(scale);
        let mut schedule = vec![Vec::new(); DAYS as usize];
        for index in 0..population.people() {
            let person = Person::derive(seed, index, population.known);
            schedule[person.first_day as usize].push(index as u32);
        }
        let product_prices = (0..population.products)
            .map(|i| {
                let p = Product::derive(seed, i);
                (p.product_id, p.price_cents)
            })
            .collect();
        Simulation {
            seed,
            population,
            schedule,
            next_day: 0,
            product_prices,
        }
    }

    pub fn population(&self) -> Population {
        self.population
    }

    /// Simulate the next day; `None` once the year is over.
    pub fn next_day(&mut self) -> Option<(u32, DayRows)> {
        let day = self.next_day;
        if day >= DAYS {
            return None;
        }
        self.next_day += 1;
        let mut rows = DayRows::new();
        let mut rng = rng_for(self.seed, 3, u64::from(day));
        if day == 0 {
            self.products(&mut rows);
        }
        let visitors = std::mem::take(&mut self.schedule[day as usize]);
        for index in visitors {
            let person = Person::derive(self.seed, u64::from(index), self.population.known);
            self.visit(&person, day, &mut rng, &mut rows);
            // Geometric gap to the next visit.
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            let gap = (-u.ln() * person.mean_gap).ceil().max(1.0) as u32;
            let next = day + gap;
            if next < person.last_day && next < DAYS {
                self.schedule[next as usize].push(index);
            }
        }
        Some((day, rows))
    }

    fn products(&self, rows: &mut DayRows) {
        let at = day_micros(0) + 3_600_000_000;
        let t = rows.get(RawTable::Products);
        for i in 0..self.population.products {
            let p = Product::derive(self.seed, i);
            t.text(Some(&p.product_id))
                .text(Some(&p.name))
                .text(Some(p.category))
                .money(Some(p.price_cents))
                .int(Some(p.stock))
                .text(Some(p.season))
                .boolean(Some(p.active))
                .timestamp(Some(at));
            t.end_row();
        }
    }

    fn visit(&self, p: &Person, day: u32, rng: &mut ChaCha8Rng, rows: &mut DayRows) {
        let first_visit = day == p.first_day;
        if p.known && first_visit {
            crm_record(p, day, rng, rows, "crm");
            signup_consents(p, day, rng, rows);
        }
        if p.known && !first_visit && rng.random_bool(0.01) {
            crm_record(p, day, rng, rows, "crm");
        }
        if p.known && !first_visit && rng.random_bool(0.005) {
            consent(
                rows,
                rng,
                day_micros(day) + 3_600_000_000,
                Some(&p.customer_id),
                Some(&p.email),
                None,
                "email_marketing",
                "denied",
                "preference_center",
            );
        }
        if p.known && (p.user_id.is_none() || rng.random_bool(p.store_rate)) {
            self.store_visit(p, day, rng, rows);
        } else {
            self.web_visit(p, day, first_visit, rng, rows);
        }
    }

    fn store_visit(&self, p: &Person, day: u32, rng: &mut ChaCha8Rng, rows: &mut DayRows) {
        if !rng.random_bool(0.6) {
            return;
        }
        let at = day_micros(day) + rng.random_range(9 * HOUR..20 * HOUR);
        let email = rng.random_bool(0.3).then(|| p.email_variant(rng));
        self.order(
            rows,
            rng,
            at,
            "store",
            Some(&p.customer_id),
            email.as_deref(),
            None,
        );
    }

    fn web_visit(
        &self,
        p: &Person,
        day: u32,
        first_visit: bool,
        rng: &mut ChaCha8Rng,
        rows: &mut DayRows,
    ) {
        let device_index = rng.random_range(0..p.devices.len());
        let device = &p.devices[device_index];
        let aliased_device = p.aliased && device_index + 1 == p.devices.len() && device_index > 0;
        let logged_in =
            p.user_id.is_some() && !aliased_device && (first_visit || rng.random_bool(0.6));
        let user_id = if logged_in {
            p.user_id.as_deref()
        } else {
            None
        };
        let mut s = Session {
            at: day_micros(day) + rng.random_range(7 * HOUR..23 * HOUR),
            anonymous_id: &device.anonymous_id,
            user_id,
            app: device.app,
        };
        if logged_in {
            s.identify(rows, rng, p);
        }
        if aliased_device
            && rng.random_bool(0.5)
            && let Some(user_id) = &p.user_id
        {
            // alias: the new id (`user_id`) takes over the cookie (`previous_id`);
            // the SDK then carries the user id for the rest of the session.
            s.user_id = Some(user_id);
            s.event(
                rows,
                rng,
                "alias",
                None,
                None,
                None,
                Some(&device.anonymous_id.clone()),
                json!({}),
                json!({}),
            );
        }
        if rng.random_bool(0.05) {
            let status = if rng.random_bool(0.75) {
                "granted"
            } else {
                "denied"
            };
            consent(
                rows,
                rng,
                s.at,
                None,
                None,
                Some(&device.anonymous_id),
                "analytics",
                status,
                "cookie_banner",
            );
        }
        let viewed = self.browse(&mut s, rng, rows);
        if !p.known {
            if rng.random_bool(0.02) {
                survey(
                    rows,
                    rng,
                    s.at,
                    None,
                    None,
                    Some(&device.anonymous_id),
                    "web",
                );
            }
            return;
        }
        if let Some(product_id) = viewed
            && rng.random_bool(p.buy_rate * 2.0)
        {
            // The order carries the customer id only when logged in (not
            // after an alias).
            let customer_id = user_id.map(|_| p.customer_id.as_str());
            self.add_to_cart(p, device, customer_id, &mut s, &product_id, rng, rows);
        }
    }

    /// One to four pages (or app screens) and up to two products viewed;
    /// returns the last product viewed.
    fn browse(
        &self,
        s: &mut Session<'_>,
        rng: &mut ChaCha8Rng,
        rows: &mut DayRows,
    ) -> Option<String> {
        for _ in 0..rng.random_range(1..5) {
            let (name, path) = PAGES[rng.random_range(0..PAGES.len())];
            let kind = if s.app { "screen" } else { "page" };
            s.event(
                rows,
                rng,
                kind,
                None,
                Some(name),
                None,
                None,
                json!({"path": path, "title": name}),
                json!({}),
            );
        }
        let mut viewed = None;
        for _ in 0..rng.random_range(0..3) {
            let (product_id, price) = self.pick_product(rng);
            let properties = json!({"product_id": product_id, "price": price as f64 / 100.0});
            s.track(rows, rng, "Product Viewed", properties);
            viewed = Some(product_id);
        }
        viewed
    }

    /// A product added to the cart, then ordered on this device (with
    /// `customer_id`) or abandoned.
    #[allow(clippy::too_many_arguments)]
    fn add_to_cart(
        &self,
        p: &Person,
        device: &Device,
        customer_id: Option<&str>,
        s: &mut Session<'_>,
        product_id: &str,
        rng: &mut ChaCha8Rng,
        rows: &mut DayRows,
    ) {
        s.track(
            rows,
            rng,
            "Product Added",
            json!({"product_id": product_id}),
        );
        if rng.random_bool(0.6) {
            let channel = if s.app { "app" } else { "web" };
            let email = p.email_variant(rng);
            s.at += rng.random_range(30_000_000..600_000_000);
            let (order_id, cents) = self.order(
                rows,
                rng,
                s.at,
                channel,
                customer_id,
                Some(&email),
                Some(&device.anonymous_id),
            );
            let properties =
                json!({"order_id": order_id, "revenue": cents as f64 / 100.0, "currency": "EUR"});
            s.track(rows, rng, "Order Completed", properties);
        } else {
            s.track(
                rows,
                rng,
                "Cart Abandoned",
                json!({"product_id": product_id}),
            );
        }
    }

    fn pick_product(&self, rng: &mut ChaCha8Rng) -> (String, i64) {
        // Popularity skew: a few products sell far more than the rest.
        let u: f64 = rng.random();
        let index = ((u * u * u) * self.product_prices.len() as f64) as usize;
        self.product_prices[index.min(self.product_prices.len() - 1)].clone()
    }

    /// Write an order and its lines; maybe a survey answer. Returns id, cents.
    #[allow(clippy::too_many_arguments)]
    fn order(
        &self,
        rows: &mut DayRows,
        rng: &mut ChaCha8Rng,
        at: i64,
        channel: &str,
        customer_id: Option<&str>,
        email: Option<&str>,
        anonymous_id: Option<&str>,
    ) -> (String, i64) {
        let order_id = format!("O{}", &uuid_like(rng)[..18].replace('-', ""));
        let lines = rng.random_range(1..5);
        let mut total = 0;
        let mut items = 0;
        for line in 0..lines {
            let (product_id, price) = self.pick_product(rng);
            let quantity = if rng.random_bool(0.85) { 1 } else { 2 };
            total += price * quantity;
            items += quantity;
            let t = rows.get(RawTable::OrderItems);
            t.text(Some(&order_id))
                .int(Some(line + 1))
                .text(Some(&product_id))
                .int(Some(quantity))
                .money(Some(price))
                .timestamp(Some(at));
            t.end_row();
        }
        let status = match rng.random_range(0..100) {
            0..7 => "returned",
            7..12 => "cancelled",
            _ => "completed",
        };
        let t = rows.get(RawTable::Orders);
        t.text(Some(&order_id))
            .text(customer_id)
            .text(email)
            .text(anonymous_id)
            .timestamp(Some(at))
            .money(Some(total))
            .text(Some("EUR"))
            .text(Some(status))
            .text(Some(channel))
            .int(Some(items));
        t.end_row();
        let later = at + rng.random_range(HOUR..6 * HOUR);
        let answered = rng.random_range(0..100);
        if answered < 25 {
            let survey_kind = match answered {
                0..12 => "nps",
                12..20 => "csat",
                _ => "ces",
            };
            survey_answer(
                rows,
                rng,
                later,
                customer_id,
                email,
                anonymous_id,
                survey_kind,
                channel,
            );
        }
        (order_id, total)
    }
}

const HOUR: i64 = 3_600_000_000;

/// Start of simulated day `day`, in microseconds since the epoch.
pub fn day_micros(day: u32) -> i64 {
    (i64::from(START_DAY) + i64::from(day)) * DAY_MICROS
}

/// One web or app session of one device.
struct Session<'a> {
    at: i64,
    anonymous_id: &'a str,
    user_id: Option<&'a str>,
    app: bool,
}

impl Session<'_> {
    /// A logged-in visit's `identify`, with the person's traits (one time
    /// in a hundred, a junk email typed into the form).
    fn identify(&mut self, rows: &mut DayRows, rng: &mut ChaCha8Rng, p: &Person) {
        let email = if rng.random_bool(0.01) {
            JUNK_EMAILS[rng.random_range(0..JUNK_EMAILS.len())].to_string()
        } else {
            p.email_variant(rng)
        };
        let traits = json!({"email": email, "firstName": p.first_name, "lastName": p.last_name});
        self.event(
            rows,
            rng,
            "identify",
            None,
            None,
            Some(&email),
            None,
            json!({}),
            traits,
        );
    }

    /// A `track` event named `event`.
    fn track(
        &mut self,
        rows: &mut DayRows,
        rng: &mut ChaCha8Rng,
        event: &str,
        properties: serde_json::Value,
    ) {
        let no_traits = json!({});
        self.event(
            rows,
            rng,
            "track",
            Some(event),
            None,
            None,
            None,
            properties,
            no_traits,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        rows: &mut DayRows,
        rng: &mut ChaCha8Rng,
        kind: &str,
        event: Option<&str>,
        name: Option<&str>,
        email: Option<&str>,
        previous_id: Option<&str>,
        properties: serde_json::Value,
        traits: serde_json::Value,
    ) {
        self.at += rng.random_range(2_000_000..90_000_000);
        let delay = if self.app && rng.random_bool(0.02) {
            rng.random_range(HOUR..12 * HOUR)
        } else {
            rng.random_range(40_000..3_000_000)
        };
        let context = if self.app {
            json!({"library": {"name": "analytics-ios", "version": "4.1.8"}, "device": {"type": "ios"}})
        } else {
            json!({"library": {"name": "analytics.js", "version": "2.11.1"}, "userAgent": "Mozilla/5.0"})
        };
        let message_id = uuid_like(rng);
        let t = rows.get(RawTable::Events);
        t.text(Some(&message_id))
            .text(Some(kind))
            .text(event)
            .text(name)
            .text(Some(self.anonymous_id))
            .text(self.user_id)
            .text(previous_id)
            .text(None)
            .text(email)
            .timestamp(Some(self.at))
            .timestamp(Some(self.at + delay))
            .text(Some(&properties.to_string()))
            .text(Some(&traits.to_string()))
            .text(Some(&context.to_string()));
        t.end_row();
    }
}

fn crm_record(p: &Person, day: u32, rng: &mut ChaCha8Rng, rows: &mut DayRows, source: &str) {
    let (email, phone) = if p.junk_identifiers {
        (
            JUNK_EMAILS[rng.random_range(0..JUNK_EMAILS.len())].to_string(),
            JUNK_PHONES[rng.random_range(0..JUNK_PHONES.len())].to_string(),
        )
    } else {
        (p.email_variant(rng), p.phone_variant(rng))
    };
    let updated = day_micros(day) + rng.random_range(0..2 * HOUR);
    let created = if p.first_day == 0 {
        day_micros(0) - rng.random_range(DAY_MICROS..900 * DAY_MICROS)
    } else {
        updated
    };
    let tier = LOYALTY_TIERS[rng.random_range(0..LOYALTY_TIERS.len())];
    let (city, postal_code, country) = p.city;
    let t = rows.get(RawTable::Customers);
    t.text(Some(&p.customer_id))
        .text(Some(&email))
        .text(rng.random_bool(0.9).then_some(phone.as_str()))
        .text(Some(p.first_name))
        .text(Some(p.last_name))
        .text(Some(&p.street))
        .text(Some(city))
        .text(Some(postal_code))
        .text(Some(country))
        .date(Some(p.birth_days))
        .text(Some(tier))
        .boolean(Some(rng.random_bool(0.55)))
        .text(Some(source))
        .timestamp(Some(created))
        .timestamp(Some(updated));
    t.end_row();
}

fn signup_consents(p: &Person, day: u32, rng: &mut ChaCha8Rng, rows: &mut DayRows) {
    let at = day_micros(day) + 2 * HOUR;
    for (purpose, granted) in [
        ("email_marketing", 0.65),
        ("sms_marketing", 0.3),
        ("ads", 0.45),
    ] {
        let status = if rng.random_bool(granted) {
            "granted"
        } else {
            "denied"
        };
        consent(
            rows,
            rng,
            at,
            Some(&p.customer_id),
            Some(&p.email),
            None,
            purpose,
            status,
            "signup_form",
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn consent(
    rows: &mut DayRows,
    rng: &mut ChaCha8Rng,
    at: i64,
    customer_id: Option<&str>,
    email: Option<&str>,
    anonymous_id: Option<&str>,
    purpose: &str,
    status: &str,
    source: &str,
) {
    let id = uuid_like(rng);
    let t = rows.get(RawTable::Consents);
    t.text(Some(&id))
        .text(customer_id)
        .text(email)
        .text(anonymous_id)
        .text(Some(purpose))
        .text(Some(status))
        .timestamp(Some(at))
        .text(Some(source));
    t.end_row();
}

fn survey(
    rows: &mut DayRows,
    rng: &mut ChaCha8Rng,
    at: i64,
    customer_id: Option<&str>,
    email: Option<&str>,
    anonymous_id: Option<&str>,
    channel: &str,
) {
    survey_answer(
        rows,
        rng,
        at,
        customer_id,
        email,
        anonymous_id,
        "nps",
        channel,
    );
}

#[allow(clippy::too_many_arguments)]
fn survey_answer(
    rows: &mut DayRows,
    rng: &mut ChaCha8Rng,
    at: i64,
    customer_id: Option<&str>,
    email: Option<&str>,
    anonymous_id: Option<&str>,
    kind: &str,
    channel: &str,
) {
    let store_bonus = if channel == "store" { 0.10 } else { 0.0 };
    let (score, comment) = match kind {
        "nps" => {
            let u: f64 = rng.random();
            if u < 0.40 + store_bonus {
                let s = rng.random_range(9..=10);
                (s, pick(rng, PROMOTER_COMMENTS, 0.3))
            } else if u < 0.72 + store_bonus / 2.0 {
                (rng.random_range(7..=8), pick(rng, PASSIVE_COMMENTS, 0.2))
            } else {
                // Detractors cluster at 5-6, with a long tail down to 0.
                let s = 6 - (rng.random::<f64>().powi(2) * 7.0) as i64;
                (s.max(0), pick(rng, DETRACTOR_COMMENTS, 0.6))
            }
        }
        "csat" => (weighted(rng, &[5, 7, 13, 35, 40]) + 1, None),
        _ => (weighted(rng, &[25, 30, 20, 12, 7, 4, 2]) + 1, None),
    };
    let id = uuid_like(rng);
    let t = rows.get(RawTable::SurveyResponses);
    t.text(Some(&id))
        .text(customer_id)
        .text(email)
        .text(anonymous_id)
        .text(Some(kind))
        .int(Some(score))
        .text(comment)
        .text(Some(channel))
        .timestamp(Some(at));
    t.end_row();
}

fn pick(rng: &mut ChaCha8Rng, pool: &[&'static str], chance: f64) -> Option<&'static str> {
    rng.random_bool(chance)
        .then(|| pool[rng.random_range(0..pool.len())])
}

fn weighted(rng: &mut ChaCha8Rng, weights: &[u32]) -> i64 {
    let total: u32 = weights.iter().sum();
    let mut x = rng.random_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i as i64;
        }
        x -= w;
    }
    weights.len() as i64 - 1
}
