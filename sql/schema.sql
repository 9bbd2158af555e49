-- Panorama raw tables, as a PostgreSQL client sees them.
--
-- These tables are not created with this file: each is a Delta table in the
-- lake under raw/<table>/, made by the first data that lands there.
-- This file documents them (the Arrow schemas in src/schema.rs are the
-- source of truth; a unit test keeps both in step). Every table has the
-- column `date`: the UTC day of the row's business time.
-- JSON payloads are text holding a JSON object. Every table also has
-- `extra`: the fields a file or message had that no column holds (a CSV's
-- extra columns, a message's unknown keys), by field name, kept as sent;
-- `panorama ingest --drop <field>` is the only way a field is left out.

-- Segment-spec messages from web and mobile SDKs.
CREATE TABLE raw.events (
    message_id    text        NOT NULL, -- unique per message (SDK generated)
    type          text        NOT NULL, -- track, identify, page, screen, group, alias
    event         text,                 -- track: the event name ("Order Completed")
    name          text,                 -- page/screen: the page or screen name
    anonymous_id  text,                 -- cookie / device id
    user_id       text,                 -- login id once known
    previous_id   text,                 -- alias: the id being merged into user_id
    group_id      text,                 -- group: the account id
    email         text,                 -- identify: traits.email, as sent
    timestamp     timestamptz NOT NULL, -- when it happened (client clock, corrected)
    received_at   timestamptz NOT NULL, -- when the collector got it
    properties    text,                 -- JSON: event properties
    traits        text,                 -- JSON: identify traits
    context       text,                 -- JSON: library, device, user agent, ...
    extra         text,                 -- JSON: fields the source sent that no column holds
    date          date                  -- day of timestamp
);

-- CRM rows (one per export of a customer; the latest wins per field).
CREATE TABLE raw.customers (
    customer_id   text        NOT NULL,
    email         text,                 -- as typed: mixed case, spaces, junk
    phone         text,                 -- as typed: +33 / 0 prefixes, dots
    first_name    text,
    last_name     text,
    street        text,
    city          text,
    postal_code   text,
    country       text,                 -- ISO 3166 alpha-2
    birth_date    date,
    loyalty_tier  text,                 -- bronze, silver, gold, platinum
    newsletter    boolean,
    source        text        NOT NULL, -- crm, web_form, ...
    created_at    timestamptz,
    updated_at    timestamptz NOT NULL,
    extra         text,                 -- JSON: fields the source sent that no column holds
    date          date                  -- day of updated_at
);

-- Transactions from web, app and store tills.
CREATE TABLE raw.orders (
    order_id      text          NOT NULL,
    customer_id   text,                 -- known customer (login or loyalty card)
    email         text,                 -- guest checkout email
    anonymous_id  text,                 -- cookie of a web/app order
    ordered_at    timestamptz   NOT NULL,
    amount        numeric(12,2) NOT NULL,
    currency      text          NOT NULL,
    status        text          NOT NULL, -- completed, returned, cancelled
    channel       text          NOT NULL, -- web, app, store
    item_count    bigint        NOT NULL,
    extra         text,                 -- JSON: fields the source sent that no column holds
    date          date                  -- day of ordered_at
);

-- Order lines (the child table of raw.orders).
CREATE TABLE raw.order_items (
    order_id      text          NOT NULL,
    line          bigint        NOT NULL,
    product_id    text          NOT NULL,
    quantity      bigint        NOT NULL,
    unit_price    numeric(12,2) NOT NULL,
    ordered_at    timestamptz   NOT NULL,
    extra         text,                 -- JSON: fields the source sent that no column holds
    date          date                  -- day of ordered_at
);

-- Product catalogue snapshots.
CREATE TABLE raw.products (
    product_id    text          NOT NULL,
    name          text          NOT NULL,
    category      text          NOT NULL,
    price         numeric(12,2) NOT NULL,
    stock         bigint        NOT NULL,
    season        text,
    active        boolean       NOT NULL,
    updated_at    timestamptz   NOT NULL,
    extra         text,                 -- JSON: fields the source sent that no column holds
    date          date                  -- day of updated_at
);

-- NPS (0-10), CSAT (1-5) and CES (1-7, 1 = least effort) answers.
CREATE TABLE raw.survey_responses (
    response_id   text        NOT NULL,
    customer_id   text,
    email         text,
    anonymous_id  text,
    survey        text        NOT NULL, -- nps, csat, ces
    score         bigint      NOT NULL,
    comment       text,
    channel       text,                 -- web, app, store: where the experience happened
    responded_at  timestamptz NOT NULL,
    extra         text,                 -- JSON: fields the source sent that no column holds
    date          date                  -- day of responded_at
);

-- Consent records; the latest per identifier and purpose wins.
CREATE TABLE raw.consents (
    consent_id    text        NOT NULL,
    customer_id   text,
    email         text,
    anonymous_id  text,
    purpose       text        NOT NULL, -- email_marketing, sms_marketing, ads, analytics
    status        text        NOT NULL, -- granted, denied
    recorded_at   timestamptz NOT NULL,
    source        text        NOT NULL, -- signup_form, preference_center, cookie_banner, ...
    extra         text,                 -- JSON: fields the source sent that no column holds
    date          date                  -- day of recorded_at
);
